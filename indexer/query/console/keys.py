"""The public keys the console offers the browser, loaded from ``console.public_keys``.

They come from the query API's own configuration, never from Elasticsearch: an
Elasticsearch administrator can rewrite block records but not this list. The browser
shows each key's id and where it came from, and its user may pin keys of their own that
take precedence (see ``static/console.js``).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from indexer.query.console.config import ConsoleConfigError
from otel_audit.integrity import IntegrityError
from otel_audit.integrity.keys import key_id, parse_public_key, public_key_bytes

__all__ = ["PublicKeyInfo", "load_public_keys"]


@dataclass(frozen=True, slots=True)
class PublicKeyInfo:
    """One verification key as the browser receives it."""

    key_id: str
    """First 8 bytes of SHA-256 over the raw key, hex (what checkpoints name)."""
    public_key: str
    """Standard base64 of the raw 32-byte Ed25519 key (WebCrypto ``raw`` import)."""
    source: str
    """The file it was read from."""

    def to_json_dict(self) -> dict[str, str]:
        """JSON-ready dict."""
        return {"key_id": self.key_id, "public_key": self.public_key, "source": self.source}


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return [c for c in sorted(path.iterdir()) if c.suffix in (".pem", ".pub") and c.is_file()]
    return [path]


def load_public_keys(paths: Iterable[str]) -> tuple[PublicKeyInfo, ...]:
    """Read every configured key; raises :class:`ConsoleConfigError` naming the entry.

    A directory contributes its ``*.pem``/``*.pub`` public keys and skips private ones,
    like ``otel-audit verify --public-key DIR``; a named file must be a public key.
    """
    out: dict[str, PublicKeyInfo] = {}
    for i, raw in enumerate(paths):
        path = Path(raw)
        where = f"console.public_keys[{i}] ({raw})"
        if not path.exists():
            raise ConsoleConfigError(f"{where}: no such file or directory")
        for file in _files(path):
            try:
                data = file.read_bytes()
            except OSError as exc:
                raise ConsoleConfigError(f"{where}: cannot read {file}: {exc.strerror}") from exc
            if path.is_dir() and b"PRIVATE KEY-----" in data:
                continue
            try:
                key = parse_public_key(data, str(file))
            except IntegrityError as exc:
                raise ConsoleConfigError(f"{where}: {exc}") from exc
            kid = key_id(key)
            raw_b64 = base64.b64encode(public_key_bytes(key)).decode("ascii")
            out.setdefault(kid, PublicKeyInfo(kid, raw_b64, str(file)))
    return tuple(out.values())
