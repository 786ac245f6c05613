"""C2SP signed notes (``c2sp.org/signed-note``) and cosignatures (``c2sp.org/tlog-cosignature``).

A signed note is a UTF-8 text ending in a newline, a blank line, then one or more
signature lines ``— <key name> base64(key id (4 bytes) || signature)``. The text has no
control characters other than newline. Checkpoints in this form
(:func:`otel_audit.integrity.checkpoint.checkpoint_note`) are what witnesses cosign and
what Go's ``golang.org/x/mod/sumdb/note`` verifies.

Two signature types are implemented, both Ed25519:

- ``0x01`` (:data:`ED25519`): the signature is over the note text; the key id is
  ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``.
- ``0x04`` (:data:`COSIGNATURE_V1`): a witness's timestamped cosignature; the signature
  bytes are ``timestamp (u64 big-endian) || Ed25519 signature`` over
  ``"cosignature/v1\\ntime <timestamp>\\n" || note text``; the key id uses type byte 0x04.

Verifier keys (*vkeys*) are ``<name>+<hex key id>+base64(type byte || public key)``.
Verification follows the spec: signatures from unknown keys are ignored, a known key whose
signature fails rejects the whole note, and a note with no verified signature is rejected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from otel_audit.integrity.errors import IntegrityError
from otel_audit.integrity.keys import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
    public_key_bytes,
    verify_signature,
)

__all__ = [
    "COSIGNATURE_V1",
    "ED25519",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "CosignatureVerifier",
    "Note",
    "NoteError",
    "NoteSignature",
    "NoteVerificationError",
    "Signer",
    "Verifier",
    "format_note",
    "note_key_id",
    "open_note",
    "parse_note",
    "parse_vkey",
]

ED25519 = 0x01
"""Signature type byte of plain Ed25519 note signatures."""
COSIGNATURE_V1 = 0x04
"""Signature type byte of timestamped Ed25519 checkpoint cosignatures."""

MAX_NOTE_SIZE = 1 << 20
"""Largest note accepted (bytes); far above any checkpoint."""
MAX_SIGNATURES = 100
"""Most signature lines accepted in one note (the spec asks for at least 16)."""

_DASH = "\u2014 "
_MAX_TIMESTAMP = 2**63 - 1
_CONTROL_RE = re.compile(r"[\x00-\x09\x0b-\x1f]")
_NAME_RE = re.compile(r"[^\s+]+")


class NoteError(IntegrityError):
    """A signed note, signature line or verifier key is malformed."""


class NoteVerificationError(IntegrityError):
    """A signed note carries a bad signature from a known key, or none from a known key."""


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


def note_key_id(name: str, sig_type: int, public_key: Ed25519PublicKey) -> bytes:
    """``SHA-256(name || 0x0A || type || raw public key)[:4]``: the key id of a note key."""
    _check_name(name)
    material = name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key_bytes(public_key)
    return hashlib.sha256(material).digest()[:4]


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: key name, 4-byte key id and the signature bytes after it."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        """The signature line, newline included."""
        blob = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{_DASH}{self.name} {blob}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed (not yet verified) signed note."""

    text: str
    """The note text, final newline included."""
    signatures: tuple[NoteSignature, ...]

    def to_bytes(self) -> bytes:
        """The note as sent on the wire."""
        return format_note(self.text, self.signatures)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if _CONTROL_RE.search(text):
        raise NoteError("note text holds a control character other than newline")


def format_note(text: str, signatures: Iterable[NoteSignature]) -> bytes:
    """Encode ``text`` and its signatures as a signed note."""
    _check_text(text)
    sigs = list(signatures)
    if not sigs:
        raise NoteError("a signed note needs at least one signature")
    return (text + "\n" + "".join(s.line() for s in sigs)).encode("utf-8")


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(_DASH):
        raise NoteError(f"signature line does not start with an em dash and a space: {line!r}")
    name, sep, blob = line[len(_DASH) :].partition(" ")
    if not sep:
        raise NoteError("signature line has no space between key name and signature")
    _check_name(name)
    try:
        raw = base64.b64decode(blob.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise NoteError(f"signature of {name!r} is not valid base64") from exc
    if len(raw) < 5:
        raise NoteError(f"signature of {name!r} is too short ({len(raw)} bytes)")
    return NoteSignature(name, raw[:4], raw[4:])


def parse_note(data: bytes | str) -> Note:
    """Split a signed note into text and signature lines; raises :class:`NoteError`.

    The text is separated from the signatures by the last blank line; every line after it
    must be a well-formed signature line.
    """
    if isinstance(data, bytes):
        if len(data) > MAX_NOTE_SIZE:
            raise NoteError(f"note is larger than {MAX_NOTE_SIZE} bytes")
        try:
            text_all = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError("note is not valid UTF-8") from exc
    else:
        text_all = data
        if len(text_all.encode("utf-8")) > MAX_NOTE_SIZE:
            raise NoteError(f"note is larger than {MAX_NOTE_SIZE} bytes")
    if _CONTROL_RE.search(text_all):
        raise NoteError("note holds a control character other than newline")
    if not text_all.endswith("\n"):
        raise NoteError("note does not end with a newline")
    split = text_all.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text = text_all[: split + 1]
    lines = text_all[split + 2 :].split("\n")[:-1]
    if not lines:
        raise NoteError("note has no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    return Note(text, tuple(_parse_signature_line(line) for line in lines))


class Verifier:
    """A trusted note key: name, signature type and Ed25519 public key."""

    sig_type = ED25519

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        self.name = _check_name(name)
        self.public_key = public_key
        self.key_id = note_key_id(name, self.sig_type, public_key)

    def matches(self, sig: NoteSignature) -> bool:
        """True when the signature line names this key (name and key id)."""
        return sig.name == self.name and sig.key_id == self.key_id

    def verify(self, text: str, sig: NoteSignature) -> bool:
        """True when ``sig`` is this key's valid signature of ``text``."""
        return self.matches(sig) and verify_signature(
            self.public_key, text.encode("utf-8"), sig.signature
        )

    def vkey(self) -> str:
        """The verifier key string ``name+hexid+base64(type||key)``."""
        material = bytes([self.sig_type]) + public_key_bytes(self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(material).decode('ascii')}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.vkey()!r})"


def cosigned_message(text: str, timestamp: int) -> bytes:
    """The bytes a ``cosignature/v1`` signs: header, time line, then the note text."""
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


class CosignatureVerifier(Verifier):
    """A witness key: checks ``cosignature/v1`` signatures (type 0x04)."""

    sig_type = COSIGNATURE_V1

    def timestamp(self, text: str, sig: NoteSignature) -> int | None:
        """The cosignature's timestamp when it is valid for ``text``, else ``None``."""
        if not self.matches(sig) or len(sig.signature) != 8 + 64:
            return None
        ts = int.from_bytes(sig.signature[:8], "big")
        if ts > _MAX_TIMESTAMP:
            return None
        if not verify_signature(self.public_key, cosigned_message(text, ts), sig.signature[8:]):
            return None
        return ts

    def verify(self, text: str, sig: NoteSignature) -> bool:
        return self.timestamp(text, sig) is not None


class Signer:
    """A note signing key (Ed25519, type 0x01) or, with ``cosigner=True``, a witness key."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey, *, cosigner: bool = False):
        self.name = _check_name(name)
        self.private_key = private_key
        cls = CosignatureVerifier if cosigner else Verifier
        self.verifier: Verifier = cls(name, private_key.public_key())
        self.cosigner = cosigner

    def sign(self, text: str, timestamp: int | None = None) -> NoteSignature:
        """Sign ``text``; a cosigner needs the POSIX ``timestamp`` (seconds) to sign at."""
        _check_text(text)
        if self.cosigner:
            if timestamp is None or not 0 < timestamp <= _MAX_TIMESTAMP:
                raise NoteError("a cosignature needs a positive timestamp")
            raw = struct.pack(">Q", timestamp) + self.private_key.sign(
                cosigned_message(text, timestamp)
            )
        else:
            raw = self.private_key.sign(text.encode("utf-8"))
        return NoteSignature(self.name, self.verifier.key_id, raw)


def parse_vkey(vkey: str) -> Verifier:
    """Parse a verifier key (type 0x01 gives :class:`Verifier`, 0x04 a
    :class:`CosignatureVerifier`); raises :class:`NoteError` naming the problem."""
    from otel_audit.integrity.keys import parse_public_key

    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError("a verifier key is <name>+<hex key id>+<base64 key>")
    name, hex_id, b64 = parts
    _check_name(name)
    try:
        material = base64.b64decode(b64.encode("ascii"), validate=True)
        key_id = bytes.fromhex(hex_id)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise NoteError(f"verifier key {name!r}: bad hex id or base64 key") from exc
    if len(key_id) != 4 or len(material) != 33:
        raise NoteError(f"verifier key {name!r}: expected a 4-byte id and a 32-byte key")
    sig_type = material[0]
    cls: type[Verifier]
    if sig_type == ED25519:
        cls = Verifier
    elif sig_type == COSIGNATURE_V1:
        cls = CosignatureVerifier
    else:
        raise NoteError(f"verifier key {name!r}: unsupported signature type {sig_type:#04x}")
    public = parse_public_key(base64.b64encode(material[1:]).decode("ascii"), f"vkey {name}")
    verifier = cls(name, public)
    if verifier.key_id != key_id:
        raise NoteError(f"verifier key {name!r}: key id {hex_id} does not match the key")
    return verifier


def open_note(
    data: bytes | str | Note, verifiers: Sequence[Verifier]
) -> tuple[Note, list[NoteSignature]]:
    """Parse and verify a note: ``(note, signatures verified by known keys)``.

    Signatures from unknown keys are ignored. Raises :class:`NoteVerificationError` when a
    known key's signature fails or when no known key signed, :class:`NoteError` when the
    note is malformed.
    """
    note = data if isinstance(data, Note) else parse_note(data)
    verified: list[NoteSignature] = []
    for sig in note.signatures:
        for v in verifiers:
            if v.matches(sig):
                if not v.verify(note.text, sig):
                    raise NoteVerificationError(
                        f"signature of {sig.name} (key id {sig.key_id.hex()}) does not verify"
                    )
                verified.append(sig)
                break
    if not verified:
        raise NoteVerificationError("note has no signature from a trusted key")
    return note, verified
