"""Ed25519 signing keys: generate, store, load, identify, sign and verify.

Files are PEM: the private key as unencrypted PKCS#8 (written with mode 0600), the
public key as SubjectPublicKeyInfo. A key travelling in an environment variable may be
that PEM text or the base64 of the raw 32-byte key (seed for a private key).

The key id is the first 8 bytes of SHA-256 over the raw 32-byte public key, as 16
lowercase hex characters. Checkpoints name the key that signed them by this id, and a
:class:`Keyring` of public keys finds it again, so blocks signed before a key rotation
keep verifying as long as the old public key stays in the keyring.

Signature checks never raise: :func:`verify_signature` answers ``True`` or ``False``.
Unusable key material raises :class:`KeyFormatError` naming the file or variable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from otel_audit.integrity.errors import KeyFormatError

__all__ = [
    "PRIVATE_KEY_ENV",
    "PRIVATE_KEY_FILENAME",
    "PUBLIC_KEY_FILENAME",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "KeyFiles",
    "Keyring",
    "generate_private_key",
    "key_id",
    "load_private_key",
    "load_private_key_from_env",
    "load_public_key",
    "parse_private_key",
    "parse_public_key",
    "public_key_bytes",
    "sign",
    "verify_signature",
    "write_key_pair",
]

PRIVATE_KEY_FILENAME = "signing-key.pem"
"""File name of the private key written by :func:`write_key_pair`."""

PUBLIC_KEY_FILENAME = "signing-key.pub.pem"
"""File name of the public key written by :func:`write_key_pair`."""

PRIVATE_KEY_ENV = "OTEL_AUDIT_SIGNING_KEY"
"""Default environment variable holding the private key (PEM text or base64 raw)."""

_RAW_KEY_LEN = 32
_SIGNATURE_LEN = 64
_KEY_ID_BYTES = 8


def generate_private_key() -> Ed25519PrivateKey:
    """Return a new random Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def public_key_bytes(public_key: Ed25519PublicKey) -> bytes:
    """Raw 32-byte encoding of a public key (RFC 8032)."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Key id: hex of the first 8 bytes of SHA-256(raw public key), 16 characters."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return hashlib.sha256(public_key_bytes(public)).digest()[:_KEY_ID_BYTES].hex()


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True, slots=True)
class KeyFiles:
    """Where :func:`write_key_pair` put a key pair, and its key id."""

    private_key_path: Path
    public_key_path: Path
    key_id: str


def write_key_pair(
    private_key: Ed25519PrivateKey, out_dir: str | os.PathLike[str], *, force: bool = False
) -> KeyFiles:
    """Write ``signing-key.pem`` (0600) and ``signing-key.pub.pem`` into ``out_dir``.

    Refuses (``FileExistsError``) to replace an existing private key unless ``force``:
    losing a signing key that still has unsealed blocks behind it cannot be undone.
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / PRIVATE_KEY_FILENAME
    public_path = directory / PUBLIC_KEY_FILENAME
    if private_path.exists() and not force:
        raise FileExistsError(f"{private_path} exists; pass force to replace it")
    tmp = private_path.with_name(private_path.name + ".tmp")
    # Create with 0600 from the start so the key is never readable by others.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, _private_pem(private_key))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, private_path)
    public_path.write_bytes(_public_pem(private_key.public_key()))
    return KeyFiles(private_path, public_path, key_id(private_key))


def _decode_b64_raw(text: str, source: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFormatError(f"{source}: neither PEM nor base64 ({exc})") from exc
    if len(raw) != _RAW_KEY_LEN:
        raise KeyFormatError(f"{source}: raw Ed25519 key must be 32 bytes, got {len(raw)}")
    return raw


def parse_private_key(data: str | bytes, source: str = "private key") -> Ed25519PrivateKey:
    """Parse an Ed25519 private key from PEM (PKCS#8) or base64 of the raw 32-byte seed."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyFormatError(
                f"{source}: not a usable unencrypted PEM private key ({exc})"
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFormatError(f"{source}: key is {type(key).__name__}, not Ed25519")
        return key
    return Ed25519PrivateKey.from_private_bytes(_decode_b64_raw(text, source))


def parse_public_key(data: str | bytes, source: str = "public key") -> Ed25519PublicKey:
    """Parse an Ed25519 public key from PEM (SubjectPublicKeyInfo) or base64 of raw bytes.

    A PEM private key is refused: verifiers should never be handed signing keys.
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if "PRIVATE KEY-----" in text:
        raise KeyFormatError(f"{source}: this is a private key; give the public key")
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyFormatError(f"{source}: not a usable PEM public key ({exc})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFormatError(f"{source}: key is {type(key).__name__}, not Ed25519")
        return key
    try:
        return Ed25519PublicKey.from_public_bytes(_decode_b64_raw(text, source))
    except ValueError as exc:
        raise KeyFormatError(f"{source}: not an Ed25519 public key ({exc})") from exc


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFormatError(f"{path}: cannot read key file ({exc.strerror or exc})") from exc


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load a private key file (PEM or base64 raw seed)."""
    return parse_private_key(_read(path), str(path))


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Load a public key file (PEM or base64 raw)."""
    return parse_public_key(_read(path), str(path))


def load_private_key_from_env(
    name: str = PRIVATE_KEY_ENV, environ: dict[str, str] | None = None
) -> Ed25519PrivateKey:
    """Load the private key from environment variable ``name`` (PEM text or base64 raw)."""
    env = os.environ if environ is None else environ
    value = env.get(name)
    if not value:
        raise KeyFormatError(f"environment variable {name} is not set")
    return parse_private_key(value, f"environment variable {name}")


def sign(private_key: Ed25519PrivateKey, message: bytes) -> bytes:
    """Ed25519 signature (64 bytes) of ``message``."""
    return private_key.sign(message)


def verify_signature(public_key: Ed25519PublicKey, message: bytes, signature: bytes) -> bool:
    """``True`` only when ``signature`` is a valid Ed25519 signature of ``message``.

    Never raises: wrong lengths or types simply answer ``False``.
    """
    if not isinstance(signature, bytes) or len(signature) != _SIGNATURE_LEN:
        return False
    if not isinstance(message, bytes):
        return False
    try:
        public_key.verify(signature, message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


class Keyring:
    """Public keys by key id, for verifying checkpoints signed by any of them.

    Keep retired keys here after a rotation: old checkpoints name their key by id.
    """

    def __init__(self, keys: Iterable[Ed25519PublicKey] = ()) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for key in keys:
            self.add(key)

    def add(self, public_key: Ed25519PublicKey) -> str:
        """Add a public key; returns its key id."""
        if not isinstance(public_key, Ed25519PublicKey):
            raise KeyFormatError(
                f"keyring holds Ed25519 public keys, got {type(public_key).__name__}"
            )
        kid = key_id(public_key)
        self._keys[kid] = public_key
        return kid

    def get(self, kid: str) -> Ed25519PublicKey | None:
        """The public key with id ``kid``, or ``None`` (also for a non-string id)."""
        return self._keys.get(kid) if isinstance(kid, str) else None

    def key_ids(self) -> list[str]:
        """Ids of every key in the ring, sorted."""
        return sorted(self._keys)

    def __contains__(self, kid: object) -> bool:
        return isinstance(kid, str) and kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self.key_ids())

    @classmethod
    def from_paths(cls, paths: Iterable[str | os.PathLike[str]]) -> Keyring:
        """Load public keys from files and directories.

        A directory contributes every ``*.pem`` and ``*.pub`` file in it that holds a
        public key; private key files there are skipped, so the directory written by
        ``keys generate`` works too. A named file must be a public key. Raises
        :class:`KeyFormatError` for unreadable or malformed files and for an empty ring.
        """
        ring = cls()
        paths = list(paths)
        for raw_path in paths:
            path = Path(raw_path)
            if path.is_dir():
                for child in sorted(path.iterdir()):
                    if child.suffix not in (".pem", ".pub") or not child.is_file():
                        continue
                    data = _read(child)
                    if b"PRIVATE KEY-----" in data:
                        continue
                    ring.add(parse_public_key(data, str(child)))
            else:
                ring.add(load_public_key(path))
        if not ring:
            raise KeyFormatError("no public keys found in " + ", ".join(str(p) for p in paths))
        return ring
