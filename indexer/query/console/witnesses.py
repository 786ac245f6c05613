"""The chain page's witness column: the cosignatures stored beside each chain's newest checkpoint.

Every checkpoint is stored with its C2SP note, ``<checkpoint dir>/<chain>/<sequence>.note``;
``witness submit`` (and the scheduled verify with ``watch.witness_urls``) replaces it with the
note a witness cosigned. For the newest cosigned note
of a chain (witnesses are asked once per scheduled run, so it usually trails the newest
checkpoint; both sequences are given) this module checks that its text is exactly the
stored checkpoint's signed body and that the log's own signature verifies, and lists every
other signature line with its name, key id and timestamp. Each is ``valid`` or ``invalid`` when a
configured witness key has the same name and key id, ``unchecked`` otherwise (the
timestamp of an unchecked line is what the line claims, nothing more).

The check runs on the server because the browser does not hold the witness keys; the page
says so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from otel_audit.integrity import Checkpoint, IntegrityError, Keyring
from otel_audit.integrity.checkpoint import checkpoint_from_note
from otel_audit.integrity.note import CosignatureVerifier, Note

__all__ = ["WitnessStatus", "WitnessView"]

WitnessStatus = Callable[[str], Mapping[str, Any]]
"""Returns the witness view of one chain (see :class:`WitnessView`)."""

_COSIGNATURE_LEN = 8 + 64
_NAME = re.compile(r"([0-9]{20})\.(json|note)")
_NOTES_LOOKED_AT = 256  # newest notes searched for cosignatures, per page load


@dataclass(frozen=True)
class WitnessView:
    """Reads cosigned notes under ``checkpoint_dir``; call it with a chain id."""

    checkpoint_dir: Path
    keyring: Keyring
    witnesses: Sequence[CosignatureVerifier] = ()

    def __call__(self, chain_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "configured": [{"name": w.name, "key_id": w.key_id.hex()} for w in self.witnesses],
            "newest_sequence": None,
            "sequence": None,
            "tree_size": None,
            "cosignatures": [],
            "problem": None,
        }
        if "/" in chain_id or chain_id in ("", ".", ".."):
            out["problem"] = "chain id is not a directory name"
            return out
        directory = self.checkpoint_dir / chain_id
        newest_json, notes = _scan(directory)
        out["newest_sequence"] = newest_json
        # Every checkpoint has its note; a witness's cosignatures are added to the note of
        # the checkpoint it was shown, so the newest cosigned one is usually a little older.
        for seq in notes[:_NOTES_LOOKED_AT]:
            path = directory / f"{seq:020d}.note"
            try:
                signed, note = checkpoint_from_note(path.read_bytes(), self.keyring)
                if not any(sig.signature != signed.signature for sig in note.signatures):
                    continue  # only the log's own signature: not cosigned
                stored = Checkpoint.from_json_dict(
                    orjson.loads((directory / f"{seq:020d}.json").read_bytes())
                )
            except FileNotFoundError as exc:
                out["sequence"] = seq
                out["problem"] = f"{Path(exc.filename or path).name} is missing"
                return out
            except (IntegrityError, OSError, orjson.JSONDecodeError) as exc:
                out["sequence"] = seq
                out["problem"] = f"{path.name}: {exc}"
                return out
            out["sequence"] = seq
            if signed != stored:
                out["problem"] = f"{path.name} is not the stored checkpoint {seq}"
                return out
            out["tree_size"] = signed.tree_size
            out["cosignatures"] = self._lines(note, signed.signature)
            return out
        among = len(notes) > _NOTES_LOOKED_AT
        out["problem"] = "no cosigned note stored for this chain" + (
            f" among its newest {_NOTES_LOOKED_AT} checkpoints" if among else ""
        )
        return out

    def _lines(self, note: Note, log_signature: bytes) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for sig in note.signatures:
            if sig.signature == log_signature:
                continue  # the log's own signature, checked above
            claimed = (
                int.from_bytes(sig.signature[:8], "big")
                if len(sig.signature) == _COSIGNATURE_LEN
                else None
            )
            status = "unchecked"
            timestamp = claimed
            for w in self.witnesses:
                if w.matches(sig):
                    timestamp = w.timestamp(note.text, sig)
                    status = "valid" if timestamp is not None else "invalid"
                    if status == "invalid":
                        timestamp = claimed
                    break
            lines.append(
                {
                    "name": sig.name,
                    "key_id": sig.key_id.hex(),
                    "timestamp": timestamp,
                    "status": status,
                }
            )
        return lines


def _scan(directory: Path) -> tuple[int | None, list[int]]:
    """The highest checkpoint sequence and the note sequences, newest first (one scan)."""
    newest_json: int | None = None
    notes: list[int] = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return None, []
    for entry in entries:
        m = _NAME.fullmatch(entry.name)
        if m:
            seq = int(m.group(1))
            if m.group(2) == "note":
                notes.append(seq)
            elif newest_json is None or seq > newest_json:
                newest_json = seq
    notes.sort(reverse=True)
    return newest_json, notes
