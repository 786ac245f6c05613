"""Signed checkpoints: a chain's tree size and root, signed with Ed25519.

A checkpoint commits to every event of a chain sealed so far: the Merkle root over all
leaves ``[0, tree_size)``. Checkpoints of one chain are themselves hash-chained
(``previous_hash`` is the :meth:`Checkpoint.digest` of the one before, all zeros for the
first), so dropping, reordering or rewriting one breaks the chain.

Signed bytes (the *body*) follow the C2SP ``tlog-checkpoint`` note layout: origin, tree
size, base64 root hash, then extension lines, each ending in a newline::

    audit.example.com/receiver-0
    1048576
    3B0Vd9vB3rTQ3QAcOgrTjBIRh3ypTGuHQdyCuJ2oz0w=
    format otel-audit.checkpoint.v1
    sequence 41
    previous 7pWmt1yU7tPXvD6AcE8Wq1CQ1T8x2OQyPpmIY9JKAcw=
    timestamp_ms 1764238530123

The origin (chain id) is 1-255 printable ASCII characters without spaces, integers are
plain decimal, hashes standard padded base64: every field has exactly one encoding, so
the body is unambiguous. The Ed25519 signature is over exactly these bytes, with no
prefix, so ``openssl pkeyutl -verify -rawin`` can check it too. The signing key is
named by its key id (:func:`otel_audit.integrity.keys.key_id`), kept outside the body.

The JSON form (:meth:`Checkpoint.to_json_dict`) carries the same fields plus
``format``, ``key_id`` and ``signature``; parsing is strict (exact keys and types), and
a verifier rebuilds the body from the fields rather than trusting any text.

The signed-note form (:func:`checkpoint_note`, C2SP ``signed-note``) is the body followed
by a blank line and the line ``— <origin> base64(note key id || signature)``: the same
Ed25519 signature over the same bytes, named the way Go's ``sumdb/note`` and witnesses
expect (key name = origin, key id per :func:`otel_audit.integrity.note.note_key_id`).
Witness cosignatures are further lines of the same note. :func:`checkpoint_from_note`
parses and verifies it back into a :class:`Checkpoint`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial
from operator import methodcaller
from typing import Any

from otel_audit.integrity.errors import CheckpointFormatError
from otel_audit.integrity.keys import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
    Keyring,
    key_id,
    sign,
    verify_signature,
)
from otel_audit.integrity.merkle import HASH_SIZE, MAX_TREE_SIZE
from otel_audit.integrity.note import (
    Note,
    NoteSignature,
    Verifier,
    note_key_id,
    open_note,
    parse_note,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "GENESIS_HASH",
    "Checkpoint",
    "CheckpointStatus",
    "chain_link_problems",
    "checkpoint_from_note",
    "checkpoint_note",
    "decode_hash",
    "encode_hash",
    "encode_hashes",
    "log_verifiers",
    "make_checkpoint",
    "sign_checkpoint",
    "verify_checkpoint",
]

CHECKPOINT_FORMAT = "otel-audit.checkpoint.v1"
"""Value of the ``format`` field and the ``format`` body line."""

GENESIS_HASH = bytes(HASH_SIZE)
"""``previous_hash`` of a chain's first checkpoint (32 zero bytes)."""

_ORIGIN_RE = re.compile(r"[\x21-\x7e]{1,255}")
_KEY_ID_RE = re.compile(r"[0-9a-f]{16}")
_JSON_KEYS = frozenset(
    (
        "format",
        "origin",
        "tree_size",
        "root_hash",
        "sequence",
        "previous_hash",
        "timestamp_ms",
        "key_id",
        "signature",
    )
)
_MAX_INT = 2**63 - 1


class CheckpointStatus(StrEnum):
    """Outcome of checking a checkpoint's signature against a keyring."""

    OK = "ok"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"


def encode_hash(value: bytes) -> str:
    """Standard padded base64, the one encoding of hashes in bodies and JSON."""
    return base64.b64encode(value).decode("ascii")


_B64 = partial(binascii.b2a_base64, newline=False)
_ASCII = methodcaller("decode", "ascii")


def encode_hashes(values: Iterable[bytes]) -> list[str]:
    """:func:`encode_hash` of each value (a block's thousands of leaves), without a
    Python call per value."""
    return list(map(_ASCII, map(_B64, values)))


def decode_hash(value: object, name: str, length: int = HASH_SIZE) -> bytes:
    """Strictly decode base64 of exactly ``length`` bytes; raises CheckpointFormatError."""
    if not isinstance(value, str):
        raise CheckpointFormatError(f"{name} must be a base64 string, got {type(value).__name__}")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise CheckpointFormatError(f"{name} is not valid base64") from exc
    # Re-encoding must give the same text: one encoding per value, no slack bits.
    if len(raw) != length or encode_hash(raw) != value:
        raise CheckpointFormatError(f"{name} must be the base64 of {length} bytes")
    return raw


def _check_int(value: object, name: str, maximum: int = _MAX_INT) -> int:
    if type(value) is not int:
        raise CheckpointFormatError(f"{name} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise CheckpointFormatError(f"{name} {value} is out of range 0..{maximum}")
    return value


def _check_origin(value: object) -> str:
    if not isinstance(value, str) or not _ORIGIN_RE.fullmatch(value):
        raise CheckpointFormatError(
            "origin must be 1-255 printable ASCII characters without spaces"
        )
    return value


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A chain's state after sealing a block; unsigned until :func:`sign_checkpoint`.

    Fields mirror the JSON keys. Construct with :func:`make_checkpoint` or
    :meth:`from_json_dict`, which validate; the constructor itself does not.
    """

    origin: str
    """Chain id: one receiver replica's chain."""
    tree_size: int
    """Number of leaves covered: events ``[0, tree_size)`` of the chain."""
    root_hash: bytes
    """RFC 9162 root over those leaves."""
    sequence: int
    """Block number, 0 for the first checkpoint of the chain."""
    previous_hash: bytes
    """:meth:`digest` of the previous checkpoint, :data:`GENESIS_HASH` for the first."""
    timestamp_ms: int
    """When the block was sealed, Unix epoch milliseconds (receiver clock)."""
    key_id: str = ""
    """Id of the signing key; empty while unsigned."""
    signature: bytes = b""
    """Ed25519 signature over :meth:`body`; empty while unsigned."""

    def body(self) -> bytes:
        """The exact bytes that are signed (see the module docstring)."""
        return (
            f"{self.origin}\n{self.tree_size}\n{encode_hash(self.root_hash)}\n"
            f"format {CHECKPOINT_FORMAT}\n"
            f"sequence {self.sequence}\n"
            f"previous {encode_hash(self.previous_hash)}\n"
            f"timestamp_ms {self.timestamp_ms}\n"
        ).encode("ascii")

    def digest(self) -> bytes:
        """SHA-256 of :meth:`body`: the next checkpoint's ``previous_hash``."""
        return hashlib.sha256(self.body()).digest()

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready dict (hashes and signature in base64)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "origin": self.origin,
            "tree_size": self.tree_size,
            "root_hash": encode_hash(self.root_hash),
            "sequence": self.sequence,
            "previous_hash": encode_hash(self.previous_hash),
            "timestamp_ms": self.timestamp_ms,
            "key_id": self.key_id,
            "signature": encode_hash(self.signature),
        }

    @classmethod
    def from_json_dict(cls, data: object) -> Checkpoint:
        """Parse a signed checkpoint; raises :class:`CheckpointFormatError` on any deviation."""
        if not isinstance(data, Mapping):
            raise CheckpointFormatError(f"checkpoint must be an object, got {type(data).__name__}")
        keys = set(data)
        if keys != _JSON_KEYS:
            missing = sorted(_JSON_KEYS - keys)
            extra = sorted(str(k) for k in keys - _JSON_KEYS)
            raise CheckpointFormatError(
                f"checkpoint fields wrong: missing {missing or 'none'}, "
                f"unexpected {extra or 'none'}"
            )
        if data["format"] != CHECKPOINT_FORMAT:
            raise CheckpointFormatError(
                f"checkpoint format {data['format']!r} is not {CHECKPOINT_FORMAT!r}"
            )
        kid = data["key_id"]
        if not isinstance(kid, str) or not _KEY_ID_RE.fullmatch(kid):
            raise CheckpointFormatError("key_id must be 16 lowercase hex characters")
        return cls(
            origin=_check_origin(data["origin"]),
            tree_size=_check_int(data["tree_size"], "tree_size", MAX_TREE_SIZE),
            root_hash=decode_hash(data["root_hash"], "root_hash"),
            sequence=_check_int(data["sequence"], "sequence"),
            previous_hash=decode_hash(data["previous_hash"], "previous_hash"),
            timestamp_ms=_check_int(data["timestamp_ms"], "timestamp_ms"),
            key_id=kid,
            signature=decode_hash(data["signature"], "signature", 64),
        )


def make_checkpoint(
    *,
    origin: str,
    tree_size: int,
    root_hash: bytes,
    sequence: int,
    previous_hash: bytes,
    timestamp_ms: int | None = None,
) -> Checkpoint:
    """Build an unsigned checkpoint, validating every field.

    ``timestamp_ms`` defaults to now. Raises :class:`CheckpointFormatError`.
    """
    for name, value in (("root_hash", root_hash), ("previous_hash", previous_hash)):
        if not isinstance(value, bytes) or len(value) != HASH_SIZE:
            raise CheckpointFormatError(f"{name} must be {HASH_SIZE} bytes")
    return Checkpoint(
        origin=_check_origin(origin),
        tree_size=_check_int(tree_size, "tree_size", MAX_TREE_SIZE),
        root_hash=root_hash,
        sequence=_check_int(sequence, "sequence"),
        previous_hash=previous_hash,
        timestamp_ms=_check_int(
            time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms, "timestamp_ms"
        ),
    )


def sign_checkpoint(checkpoint: Checkpoint, private_key: Ed25519PrivateKey) -> Checkpoint:
    """Return ``checkpoint`` with ``key_id`` and ``signature`` set (~35 us)."""
    return replace(
        checkpoint, key_id=key_id(private_key), signature=sign(private_key, checkpoint.body())
    )


def verify_checkpoint(checkpoint: Checkpoint, keyring: Keyring) -> CheckpointStatus:
    """Check the signature with the key the checkpoint names; never raises."""
    public = keyring.get(checkpoint.key_id)
    if public is None:
        return CheckpointStatus.UNKNOWN_KEY
    try:
        body = checkpoint.body()
    except (TypeError, ValueError, UnicodeEncodeError):
        return CheckpointStatus.BAD_SIGNATURE
    if verify_signature(public, body, checkpoint.signature):
        return CheckpointStatus.OK
    return CheckpointStatus.BAD_SIGNATURE


def chain_link_problems(previous: Checkpoint | None, current: Checkpoint) -> list[str]:
    """What is wrong with ``current`` following ``previous`` (``None``: chain start).

    Checks origin, sequence, ``previous_hash`` and that the tree did not shrink; an
    empty list means the link holds. Signatures and roots are checked elsewhere.
    """
    problems: list[str] = []
    if previous is None:
        if current.sequence != 0:
            problems.append(f"first checkpoint has sequence {current.sequence}, expected 0")
        if current.previous_hash != GENESIS_HASH:
            problems.append("first checkpoint's previous_hash is not the genesis hash")
        return problems
    if current.origin != previous.origin:
        problems.append(f"origin changed from {previous.origin!r} to {current.origin!r}")
    if current.sequence != previous.sequence + 1:
        problems.append(f"sequence {current.sequence} does not follow {previous.sequence}")
    if current.previous_hash != previous.digest():
        problems.append(f"checkpoint {current.sequence} does not chain to {previous.sequence}")
    if current.tree_size < previous.tree_size:
        problems.append(f"tree shrank from {previous.tree_size} to {current.tree_size} leaves")
    return problems


def checkpoint_note(
    checkpoint: Checkpoint,
    public_key: Ed25519PublicKey,
    cosignatures: Iterable[NoteSignature] = (),
) -> bytes:
    """The signed checkpoint as a C2SP signed note (key name = origin), plus cosignatures.

    Reuses the checkpoint's own signature (it is over the note text already); raises
    :class:`CheckpointFormatError` when the checkpoint is unsigned or ``public_key`` is not
    the key that signed it.
    """
    if not checkpoint.signature:
        raise CheckpointFormatError("checkpoint is not signed")
    if key_id(public_key) != checkpoint.key_id:
        raise CheckpointFormatError(
            f"public key {key_id(public_key)} did not sign this checkpoint ({checkpoint.key_id})"
        )
    log_sig = NoteSignature(
        checkpoint.origin, note_key_id(checkpoint.origin, 0x01, public_key), checkpoint.signature
    )
    return Note(checkpoint.body().decode("ascii"), (log_sig, *cosignatures)).to_bytes()


def log_verifiers(origin: str, keyring: Keyring) -> list[Verifier]:
    """Note verifiers for a chain's checkpoints: every key of ``keyring`` named ``origin``."""
    out = []
    for kid in keyring.key_ids():
        public = keyring.get(kid)
        if public is not None:
            out.append(Verifier(origin, public))
    return out


def _body_fields(text: str) -> Checkpoint:
    lines = text.split("\n")
    if len(lines) != 8 or lines[-1] != "":
        raise CheckpointFormatError(
            f"checkpoint note has {len(lines) - 1} lines, an {CHECKPOINT_FORMAT} body has 7"
        )
    origin, size, root, fmt, seq, prev, ts = lines[:7]
    if fmt != f"format {CHECKPOINT_FORMAT}":
        raise CheckpointFormatError(f"checkpoint note is not {CHECKPOINT_FORMAT}: {fmt!r}")

    def number(value: str, name: str, maximum: int = _MAX_INT) -> int:
        if not value.isdigit() or (len(value) > 1 and value[0] == "0"):
            raise CheckpointFormatError(f"{name} {value!r} is not a plain decimal")
        return _check_int(int(value), name, maximum)

    def after(line: str, prefix: str) -> str:
        if not line.startswith(prefix + " "):
            raise CheckpointFormatError(f"expected a {prefix!r} line, got {line!r}")
        return line[len(prefix) + 1 :]

    cp = Checkpoint(
        origin=_check_origin(origin),
        tree_size=number(size, "tree_size", MAX_TREE_SIZE),
        root_hash=decode_hash(root, "root_hash"),
        sequence=number(after(seq, "sequence"), "sequence"),
        previous_hash=decode_hash(after(prev, "previous"), "previous_hash"),
        timestamp_ms=number(after(ts, "timestamp_ms"), "timestamp_ms"),
    )
    if cp.body().decode("ascii") != text:
        raise CheckpointFormatError("checkpoint note text is not in its one canonical form")
    return cp


def checkpoint_from_note(data: bytes | str | Note, keyring: Keyring) -> tuple[Checkpoint, Note]:
    """Parse and verify a checkpoint note signed by a key of ``keyring`` named by its origin.

    Returns the signed :class:`Checkpoint` and the parsed note (whose other signature lines,
    such as cosignatures, the caller checks with its own verifiers). Raises
    :class:`CheckpointFormatError` or a :class:`otel_audit.integrity.note.NoteError`/
    ``NoteVerificationError``.
    """
    note = data if isinstance(data, Note) else parse_note(data)
    origin = note.text.split("\n", 1)[0]
    cp = _body_fields(note.text)
    _, verified = open_note(note, log_verifiers(_check_origin(origin), keyring))
    sig = verified[0]
    for kid in keyring.key_ids():
        public = keyring.get(kid)
        if public is not None and note_key_id(origin, 0x01, public) == sig.key_id:
            return replace(cp, key_id=kid, signature=sig.signature), note
    raise CheckpointFormatError("no key of the keyring signed this checkpoint note")
