"""Signed checkpoints kept outside Elasticsearch, so deleting or rolling back blocks shows.

Every checkpoint the sealer signs is appended here as well as to ``audit-blocks``. A
verifier compares the two: a checkpoint here that Elasticsearch no longer has means the
newest blocks were cut off (or the whole index deleted); one that differs means a block
was replaced.

The default store is a directory, one sub-directory per chain and one file per
checkpoint::

    <checkpoint_dir>/<chain id>/00000000000000000041.json
    <checkpoint_dir>/<chain id>/00000000000000000041.note

The ``.note`` file is the same checkpoint as a C2SP signed note (tlog-checkpoint), written
when the store knows the signer's public key (the sealer's store does): Go's
``sumdb/note`` and witnesses read it as it is, and ``witness submit`` adds the
cosignatures to it.

Files are written to a temporary name, fsynced and renamed, so a crash never leaves a
torn checkpoint. Point the directory at storage the Elasticsearch administrators cannot
rewrite (another host, a WORM bucket mounted as files, a different team's volume).

Other stores implement :class:`otel_audit.integrity.store.CheckpointStore` and plug in
through :func:`open_checkpoint_store` (``package.module:factory`` called with the location
string).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import orjson

from indexer.state_files import fsync_dir, write_atomic
from otel_audit.integrity import Checkpoint, CheckpointFormatError, Keyring
from otel_audit.integrity.checkpoint import checkpoint_note
from otel_audit.integrity.store import CheckpointStore

__all__ = ["DirectoryCheckpointStore", "open_checkpoint_store"]

_NAME_RE = re.compile(r"(\d{20})\.json")


class DirectoryCheckpointStore:
    """The default :class:`CheckpointStore`: one JSON file per checkpoint, plus its signed
    note when ``keyring`` holds the key that signed it."""

    def __init__(self, root: str | os.PathLike[str], keyring: Keyring | None = None) -> None:
        self.root = Path(root)
        self.keyring = keyring

    def _chain_dir(self, chain_id: str) -> Path:
        # Chain ids are printable ASCII without spaces; '/' would escape the directory.
        if "/" in chain_id or chain_id in (".", ".."):
            raise ValueError(f"chain id {chain_id!r} cannot name a directory")
        return self.root / chain_id

    def append(self, checkpoint: Checkpoint) -> None:
        """Write the checkpoint file (fsync + rename); see :meth:`CheckpointStore.append`."""
        directory = self._chain_dir(checkpoint.origin)
        created = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        if created:
            fsync_dir(directory.parent)
        path = directory / f"{checkpoint.sequence:020d}.json"
        data = orjson.dumps(checkpoint.to_json_dict(), option=orjson.OPT_SORT_KEYS)
        if path.exists():
            if path.read_bytes() != data:
                raise FileExistsError(
                    f"{path} already holds a different checkpoint for sequence "
                    f"{checkpoint.sequence}"
                )
        else:
            write_atomic(path, data)
        self._write_note(path.with_suffix(".note"), checkpoint)

    def _write_note(self, path: Path, checkpoint: Checkpoint) -> None:
        """The signed-note form beside the JSON; an existing note (perhaps cosigned
        already) is kept."""
        key = self.keyring.get(checkpoint.key_id) if self.keyring is not None else None
        if key is None or path.exists():
            return
        write_atomic(path, checkpoint_note(checkpoint, key))

    def chains(self) -> list[str]:
        """Chain ids that have a directory here."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def _sequences(self, chain_id: str) -> list[int]:
        """The chain's checkpoint sequence numbers, sorted; only the numbers are held (not
        a path per file), as a verify reads the files one at a time."""
        directory = self._chain_dir(chain_id)
        if not directory.is_dir():
            return []
        sequences: list[int] = []
        with os.scandir(directory) as entries:
            for entry in entries:
                if _NAME_RE.fullmatch(entry.name):
                    sequences.append(int(entry.name[:20]))
        sequences.sort()
        return sequences

    @staticmethod
    def _load(path: Path) -> Checkpoint | CheckpointFormatError:
        try:
            return Checkpoint.from_json_dict(orjson.loads(path.read_bytes()))
        except (OSError, orjson.JSONDecodeError) as exc:
            return CheckpointFormatError(f"{path}: unreadable checkpoint ({exc})")
        except CheckpointFormatError as exc:
            return CheckpointFormatError(f"{path}: {exc}")

    def read(self, chain_id: str) -> Iterator[Checkpoint | CheckpointFormatError]:
        """Checkpoints of the chain in sequence order."""
        directory = self._chain_dir(chain_id)
        for seq in self._sequences(chain_id):
            yield self._load(directory / f"{seq:020d}.json")

    def latest(self, chain_id: str) -> Checkpoint | None:
        """Newest readable checkpoint of the chain."""
        directory = self._chain_dir(chain_id)
        for seq in reversed(self._sequences(chain_id)):
            loaded = self._load(directory / f"{seq:020d}.json")
            if isinstance(loaded, Checkpoint):
                return loaded
        return None


def open_checkpoint_store(location: str, keyring: Keyring | None = None) -> CheckpointStore:
    """Open the store named by ``location``.

    A plain path (or ``dir:PATH``) is a :class:`DirectoryCheckpointStore` (writing signed
    notes for the checkpoints of ``keyring``'s keys);
    ``package.module:factory`` imports ``factory`` and calls it with the text after the
    first ``=`` (``mypkg.s3:open=bucket/prefix``), or with no argument.
    """
    if not location:
        raise ValueError("checkpoint store location is empty")
    if location.startswith("dir:"):
        return DirectoryCheckpointStore(location[4:], keyring)
    head, sep, arg = location.partition("=")
    if ":" in head and "/" not in head.split(":", 1)[0] and not Path(location).exists():
        module_name, _, attr = head.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        store: CheckpointStore = factory(arg) if sep else factory()
        return store
    return DirectoryCheckpointStore(location, keyring)
