"""The sealer's local durable state: chain position and the journal of unsealed events.

Layout of ``integrity.state_dir``::

    LOCK                  flock'ed by the one receiver that owns this chain
    chain_id              the chain id, generated once
    state_id              this directory's random id (the chain lease names it)
    state.json            ChainState: last sequence, tree size, frontier, last digest,
                          journal generation and how far into it everything is sealed
    journal-<gen>.log     one line per durably stored event not known sealed:
                          [index, event id, base64 leaf hash, @timestamp]
    intent-<gen>.log      one line per event a write is about to send to Elasticsearch,
                          appended (one fsync per write) before the ``_bulk``: same line
                          format as the journal; resolved and deleted once every write
                          of the generation is journaled or found missing
    journal-quarantine.log  corrupt journal lines set aside at start, with their offsets
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
import logging
import os
import secrets
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson

from indexer.state_files import lock_dir, write_atomic
from otel_audit.integrity import (
    GENESIS_HASH,
    Checkpoint,
    CompactRange,
    decode_hash,
    encode_hash,
)
from receiver import native

__all__ = [
    "QUARANTINE_FILENAME",
    "ChainState",
    "Entries",
    "IntentLog",
    "Journal",
    "Pending",
    "StateDir",
]

_log = logging.getLogger("otel_audit.receiver.sealer")

QUARANTINE_FILENAME = "journal-quarantine.log"
"""Corrupt journal lines found at start, one JSON object each (journal, offset, line)."""

_native = native.module()
# The native extension writes a batch's lines in one call; the orjson loop is the reference.
_native_lines = getattr(_native, "journal_lines", None) if _native is not None else None
# ... and extends the chain's Merkle frontier; CompactRange's loop is the reference.
_native_extend = getattr(_native, "merkle_extend", None) if _native is not None else None


@dataclass(slots=True)
class Entries:
    """Stored events waiting to be sealed, as columns in journal order.

    A block gathers thousands of events. As columns, the write path hands them over, the
    journal writes them and a block takes them with a few list operations done in C,
    instead of a Python object and a Python step per event.
    """

    index_names: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    leaf_hashes: list[bytes] = field(default_factory=list)
    timestamps: list[str] = field(default_factory=list)
    """``@timestamp`` of each event ("" when its document has none)."""

    def __len__(self) -> int:
        return len(self.event_ids)

    def select(self, positions: Sequence[int]) -> Entries:
        """The entries at ``positions``, in that order."""
        return Entries(
            [self.index_names[i] for i in positions],
            [self.event_ids[i] for i in positions],
            [self.leaf_hashes[i] for i in positions],
            [self.timestamps[i] for i in positions],
        )

    def head(self, n: int) -> Entries:
        """The first ``n`` entries."""
        return Entries(
            self.index_names[:n], self.event_ids[:n], self.leaf_hashes[:n], self.timestamps[:n]
        )

    def extend(self, other: Entries) -> None:
        """Append ``other``'s entries."""
        self.index_names.extend(other.index_names)
        self.event_ids.extend(other.event_ids)
        self.leaf_hashes.extend(other.leaf_hashes)
        self.timestamps.extend(other.timestamps)

    def drop(self, n: int) -> None:
        """Remove the first ``n`` entries."""
        del self.index_names[:n], self.event_ids[:n], self.leaf_hashes[:n], self.timestamps[:n]

    def new_positions(self, seen: set[str]) -> list[int] | None:
        """Positions of the entries whose id is neither in ``seen`` nor repeats an earlier
        entry's; None when that is every entry."""
        ids = self.event_ids
        if seen.isdisjoint(ids) and len(set(ids)) == len(ids):
            return None
        taken = set(seen)
        keep = []
        for i, event_id in enumerate(ids):
            if event_id not in taken:
                taken.add(event_id)
                keep.append(i)
        return keep

    def unique(self, seen: set[str]) -> Entries:
        """These entries without those whose id is in ``seen`` or repeats an earlier one."""
        keep = self.new_positions(seen)
        return self if keep is None else self.select(keep)


class Pending:
    """The entries not sealed yet, with the journal offset just past each, and their ids."""

    __slots__ = ("ends", "entries", "ids")

    def __init__(self) -> None:
        self.entries = Entries()
        self.ends: list[int] = []
        self.ids: set[str] = set()

    def __len__(self) -> int:
        return len(self.ends)

    def add(self, entries: Entries, ends: Sequence[int]) -> None:
        """Append entries (unique, none pending yet) journaled up to ``ends``."""
        self.entries.extend(entries)
        self.ends.extend(ends)
        self.ids.update(entries.event_ids)

    def drop(self, n: int) -> None:
        """Forget the first ``n`` entries (sealed)."""
        self.ids.difference_update(self.entries.event_ids[:n])
        self.entries.drop(n)
        del self.ends[:n]

    def discard_head(self, sealed: set[str], n: int) -> int:
        """Forget those of the first ``n`` entries whose id is in ``sealed``; returns how
        many of the ``n`` remain."""
        head = self.entries.event_ids[:n]
        keep = [i for i, event_id in enumerate(head) if event_id not in sealed]
        kept = len(keep)
        if kept < len(head):
            keep.extend(range(n, len(self)))
            self.entries = self.entries.select(keep)
            self.ends = [self.ends[i] for i in keep]
            self.ids.difference_update(i for i in head if i in sealed)
        return kept


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
        return CompactRange.from_state(self.tree_size, self.frontier, fast_extend=_native_extend)

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
    """Append-only file of entry lines for one generation.

    Each line is the JSON array ``[index, event id, base64 leaf hash, @timestamp]``.

    Appends are not fsynced one by one (:attr:`SYNC_EACH_APPEND`): every journaled event
    is also in an intent file, fsynced before its write was sent, so a journal tail lost
    with the machine's power is found again from the intents. What must hold is that the
    journal is on disk before an intent file it makes redundant is deleted: the sealer
    calls :meth:`sync` first. A killed process loses nothing written (the page cache
    keeps it). This takes an fsync per write off the path a client waits on.
    """

    SYNC_EACH_APPEND = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self._fd).st_size
        self.synced = self.size
        """Bytes known to be on disk."""
        self._sync_lock = threading.Lock()

    @property
    def unsynced(self) -> bool:
        """Whether lines were written since the last fsync."""
        return self.size > self.synced

    def append(self, entries: Entries) -> list[int]:
        """Write the entries (fsynced when :attr:`SYNC_EACH_APPEND`); returns the offset
        just past each entry.

        Blocking (call from a worker thread).
        """
        ends = self.write(entries)
        if ends and self.SYNC_EACH_APPEND:
            self.sync_to(ends[-1])
        return ends

    def write(self, entries: Entries) -> list[int]:
        """Write the entries without an fsync (one writer at a time); the offset just
        past each. Blocking."""
        return self._write(entries)

    def sync(self) -> None:
        """fsync what was written so far (blocking)."""
        self.sync_to(self.size)

    def sync_to(self, end: int) -> None:
        """Return once the file is on disk up to ``end`` (blocking). Writers that sync
        at the same time share an fsync: one that finds its bytes already synced by
        another's returns at once (group commit)."""
        with self._sync_lock:
            if self.synced >= end:
                return
            if self._fd < 0:
                raise OSError(f"{self.path} is closed with bytes not synced")
            size = self.size
            os.fsync(self._fd)
            self.synced = max(self.synced, size)

    def _write(self, entries: Entries) -> list[int]:
        data, ends = self._lines(entries)
        if ends:
            try:
                written = os.write(self._fd, data)
                if written != len(data):
                    raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
            except OSError:
                self._after_failed_append()
                raise
            self.size = ends[-1]
        return ends

    def _after_failed_append(self) -> None:
        """Keep offsets true after a failed append: end a partly written line so that
        the next entry starts a line of its own (the part is set aside when read)."""
        try:
            size = os.fstat(self._fd).st_size
            if size > self.size:
                with self.path.open("rb") as fh:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        os.write(self._fd, b"\n")
                        size += 1
            self.size = size
        except OSError:
            self.size = os.fstat(self._fd).st_size

    def _lines(self, entries: Entries) -> tuple[bytes, list[int]]:
        """The entries' lines and the offset just past each."""
        columns = (entries.index_names, entries.event_ids, entries.leaf_hashes, entries.timestamps)
        if _native_lines is not None:
            try:
                return _native_lines(*columns, self.size)  # type: ignore[no-any-return]
            except (TypeError, ValueError):
                pass  # not str / bytes where expected: orjson says what is wrong below
        # b2a_base64 without newline is encode_hash's padded base64, minus a Python call.
        b64 = binascii.b2a_base64
        dumps = orjson.dumps
        newline = orjson.OPT_APPEND_NEWLINE
        lines = [
            dumps((index, event_id, b64(leaf, newline=False).decode(), ts), option=newline)
            for index, event_id, leaf, ts in zip(*columns, strict=True)
        ]
        return b"".join(lines), list(accumulate(map(len, lines), initial=self.size))[1:]

    def read_from(self, offset: int) -> tuple[Entries, list[int]]:
        """Entries at or after ``offset``, with the offset just past each.

        A torn last line (a crash mid-append, never acknowledged) is cut off. A corrupt
        complete line elsewhere (a damaged disk block) is set aside: copied to
        ``journal-quarantine.log`` with its offset, logged, and skipped; every intact
        entry after it is kept.
        """
        data = self.path.read_bytes()
        out = Entries()
        ends: list[int] = []
        pos = offset
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end < 0:
                break
            try:
                index, event_id, leaf, ts = orjson.loads(data[pos:end])
                leaf_hash = decode_hash(leaf, "leaf hash")
                if not all(isinstance(v, str) for v in (index, event_id, ts)):
                    raise TypeError("journal fields must be strings")
            except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
                self._quarantine(pos, data[pos:end], exc)
                pos = end + 1
                continue
            pos = end + 1
            out.index_names.append(index)
            out.event_ids.append(event_id)
            out.leaf_hashes.append(leaf_hash)
            out.timestamps.append(ts)
            ends.append(pos)
        if pos < len(data):
            os.truncate(self.path, pos)
            os.fsync(self._fd)
            self.size = pos
        return out, ends

    def _quarantine(self, offset: int, line: bytes, why: Exception) -> None:
        """Keep a corrupt line aside (fsynced) and log where it was."""
        path = self.path.with_name(QUARANTINE_FILENAME)
        record = orjson.dumps(
            {
                "journal": self.path.name,
                "offset": offset,
                "error": str(why)[:300],
                "line": line.decode("utf-8", "backslashreplace"),
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, record)
            os.fsync(fd)
        finally:
            os.close(fd)
        _log.error(
            "journal %s: corrupt entry at offset %d (%d bytes) set aside to %s: %s; "
            "the entries after it are kept",
            self.path,
            offset,
            len(line),
            path,
            why,
        )

    def close(self) -> None:
        """Sync and close the file descriptor (idempotent)."""
        with self._sync_lock:
            fd, self._fd = self._fd, -1
            if fd < 0:
                return
            try:
                if self.size > self.synced:
                    os.fsync(fd)
                    self.synced = self.size
            except OSError as exc:
                _log.error("could not sync %s before closing it: %s", self.path, exc)
            finally:
                os.close(fd)


class IntentLog(Journal):
    """Append-only file of the events writes are about to send to Elasticsearch.

    The lines are journal lines (``[index, event id, base64 leaf hash, @timestamp]``);
    the file is appended and fsynced once per write before its ``_bulk``, so after a
    crash every event Elasticsearch may hold but no journal names is in an intent file.
    """

    SYNC_EACH_APPEND = True


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

    def state_id(self) -> str:
        """This state directory's own random id, generated once (the chain lease's
        ``state_id``: a lease held under it belongs to an earlier run of this receiver)."""
        path = self.root / "state_id"
        if path.exists():
            return path.read_text(encoding="ascii").strip()
        value = secrets.token_hex(16)
        write_atomic(path, value.encode("ascii") + b"\n")
        return value

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

    def intent_path(self, gen: int) -> Path:
        """File of intent generation ``gen``."""
        return self.root / f"intent-{gen:08d}.log"

    def intent_gens(self) -> list[int]:
        """Generations of the intent files present, oldest first."""
        gens = []
        for child in self.root.glob("intent-*.log"):
            try:
                gens.append(int(child.stem.split("-", 1)[1]))
            except ValueError:
                continue
        return sorted(gens)

    def open_intent(self, gen: int) -> IntentLog:
        """Create intent generation ``gen`` (its directory entry made durable)."""
        log = IntentLog(self.intent_path(gen))
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return log

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
