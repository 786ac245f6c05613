"""The sealer's local durable state: chain position and the journal of unsealed events.

Layout of ``integrity.state_dir``::

    LOCK                  flock'ed by the one receiver that owns this chain
    chain_id              the chain id, generated once
    state.json            ChainState: last sequence, tree size, frontier, last digest,
                          journal generation and how far into it everything is sealed
    journal-<gen>.log     one line per durably stored event not known sealed:
                          [index, event id, base64 leaf hash, @timestamp]
    keys/                 a generated development key, when no key is configured
    checkpoints/          the default checkpoint store

The write path appends to the journal (and fsyncs) after Elasticsearch acknowledged
the events and before the client gets its answer, so an event that is stored is always
either sealed or in the journal. The sealer takes entries in journal order; after a
block is in Elasticsearch and in the checkpoint store it advances ``journal_offset`` in
``state.json`` (write, fsync, rename). When the whole journal is sealed it moves to a
new, empty generation: state first, then the old file is deleted, so a crash at any
point neither loses an entry nor seals one twice.
"""

from __future__ import annotations

import binascii
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import orjson

from otel_audit.integrity import (
    GENESIS_HASH,
    Checkpoint,
    CompactRange,
    decode_hash,
    encode_hash,
)
from receiver.state_files import lock_dir, write_atomic

__all__ = ["ChainState", "Journal", "JournalEntry", "SealEntry", "StateDir"]


class SealEntry(Protocol):
    """What the journal and the seal loop read of a stored event waiting to be sealed.

    A :class:`JournalEntry`, or the write path's own record of the event, which carries
    the same fields (so the hot path hands its objects over without copying them).
    """

    @property
    def index_name(self) -> str: ...

    @property
    def event_id(self) -> str: ...

    @property
    def leaf_hash(self) -> bytes: ...

    @property
    def timestamp(self) -> str: ...


class JournalEntry(NamedTuple):
    """One stored event waiting to be sealed."""

    index_name: str
    event_id: str
    leaf_hash: bytes
    timestamp: str


@dataclass(frozen=True, slots=True)
class ChainState:
    """Where the chain stands after its last signed checkpoint."""

    chain_id: str
    sequence: int = -1
    """Sequence of the last checkpoint; -1 before the first."""
    tree_size: int = 0
    frontier: tuple[bytes, ...] = ()
    last_digest: bytes = GENESIS_HASH
    """Digest of the last checkpoint (the next one's ``previous_hash``)."""
    last_timestamp_ms: int = 0
    journal_gen: int = 0
    journal_offset: int = 0
    """Bytes of ``journal-<journal_gen>.log`` that are sealed."""

    def compact_range(self) -> CompactRange:
        """The chain's Merkle frontier as a :class:`CompactRange`."""
        return CompactRange.from_state(self.tree_size, self.frontier)

    def after_block(
        self, checkpoint: Checkpoint, tree: CompactRange, journal_offset: int
    ) -> ChainState:
        """The state once ``checkpoint`` is sealed, ``tree`` holding its leaves too.

        ``journal_offset`` is how far the journal is sealed after this block.
        """
        return replace(
            self,
            sequence=checkpoint.sequence,
            tree_size=tree.size,
            frontier=tree.state()[1],
            last_digest=checkpoint.digest(),
            last_timestamp_ms=checkpoint.timestamp_ms,
            journal_offset=journal_offset,
        )

    def to_json(self) -> bytes:
        """Serialized form for ``state.json``."""
        return orjson.dumps(
            {
                "chain_id": self.chain_id,
                "sequence": self.sequence,
                "tree_size": self.tree_size,
                "frontier": [encode_hash(h) for h in self.frontier],
                "last_digest": encode_hash(self.last_digest),
                "last_timestamp_ms": self.last_timestamp_ms,
                "journal_gen": self.journal_gen,
                "journal_offset": self.journal_offset,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> ChainState:
        """Parse ``state.json``; raises ValueError naming the problem."""
        try:
            raw: dict[str, Any] = orjson.loads(data)
            return cls(
                chain_id=str(raw["chain_id"]),
                sequence=int(raw["sequence"]),
                tree_size=int(raw["tree_size"]),
                frontier=tuple(decode_hash(h, "frontier") for h in raw["frontier"]),
                last_digest=decode_hash(raw["last_digest"], "last_digest"),
                last_timestamp_ms=int(raw["last_timestamp_ms"]),
                journal_gen=int(raw["journal_gen"]),
                journal_offset=int(raw["journal_offset"]),
            )
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"state.json is unreadable: {exc}") from exc


class Journal:
    """Append-only file of :class:`JournalEntry` lines for one generation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self._fd).st_size

    def append(self, entries: Sequence[SealEntry]) -> list[int]:
        """Write the entries and fsync; returns the offset just past each entry.

        Blocking (call from a worker thread).
        """
        # b2a_base64 without newline is encode_hash's padded base64, minus a Python call.
        b64 = binascii.b2a_base64
        lines = [
            orjson.dumps(
                (e.index_name, e.event_id, b64(e.leaf_hash, newline=False).decode(), e.timestamp)
            )
            + b"\n"
            for e in entries
        ]
        ends = []
        pos = self.size
        for line in lines:
            pos += len(line)
            ends.append(pos)
        if lines:
            os.write(self._fd, b"".join(lines))
            os.fsync(self._fd)
            self.size = pos
        return ends

    def read_from(self, offset: int) -> list[tuple[JournalEntry, int]]:
        """Entries at or after ``offset`` with the offset just past each.

        A torn last line (a crash mid-append, never acknowledged) is cut off.
        """
        data = self.path.read_bytes()
        out: list[tuple[JournalEntry, int]] = []
        pos = offset
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end < 0:
                break
            try:
                index, event_id, leaf, ts = orjson.loads(data[pos:end])
                entry = JournalEntry(index, event_id, decode_hash(leaf, "leaf hash"), ts)
            except (ValueError, TypeError, orjson.JSONDecodeError):
                break
            pos = end + 1
            out.append((entry, pos))
        if pos < len(data):
            os.truncate(self.path, pos)
            os.fsync(self._fd)
            self.size = pos
        return out

    def close(self) -> None:
        """Close the file descriptor (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class StateDir:
    """The state directory, locked for the lifetime of one sealer."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._lock_fd = -1

    def open(self) -> None:
        """Create and lock the directory; raises RuntimeError when another owner holds it."""
        self._lock_fd = lock_dir(
            self.root,
            0o644,
            f"{self.root} is locked by another receiver; each replica needs its own "
            "integrity.state_dir",
        )

    def close(self) -> None:
        """Release the lock (idempotent)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def chain_id(self, configured: str) -> str:
        """The configured chain id, else the persisted one, else a new one persisted now."""
        path = self.root / "chain_id"
        if configured:
            return configured
        if path.exists():
            return path.read_text(encoding="ascii").strip()
        host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "-.")[:40]
        chain = f"{host or 'receiver'}-{secrets.token_hex(6)}"
        write_atomic(path, chain.encode("ascii") + b"\n")
        return chain

    def load_state(self, chain_id: str) -> ChainState | None:
        """The persisted state, or ``None`` when there is none."""
        path = self.root / "state.json"
        if not path.exists():
            return None
        state = ChainState.from_json(path.read_bytes())
        if state.chain_id != chain_id:
            raise ValueError(
                f"{path} belongs to chain {state.chain_id!r}, not {chain_id!r}; "
                "use another state_dir for another chain"
            )
        return state

    def save_state(self, state: ChainState) -> None:
        """Persist ``state`` atomically (fsync + rename)."""
        write_atomic(self.root / "state.json", state.to_json())

    def journal_path(self, gen: int) -> Path:
        """File of journal generation ``gen``."""
        return self.root / f"journal-{gen:08d}.log"

    def rotate_journal(self, state: ChainState, journal: Journal) -> tuple[ChainState, Journal]:
        """Start an empty generation once everything in ``journal`` is sealed."""
        new_state = replace(state, journal_gen=state.journal_gen + 1, journal_offset=0)
        new_journal = Journal(self.journal_path(new_state.journal_gen))
        self.save_state(new_state)
        journal.close()
        journal.path.unlink(missing_ok=True)
        return new_state, new_journal

    def stale_journals(self, gen: int) -> list[Path]:
        """Journal files of generations before ``gen`` (left by a crash mid-rotation)."""
        out = []
        for child in self.root.glob("journal-*.log"):
            try:
                if int(child.stem.split("-", 1)[1]) < gen:
                    out.append(child)
            except ValueError:
                continue
        return out
