"""Settings of the local S3 server: the pinned s3proxy build, where it listens and keeps data.

Every field can come from the environment (``OTEL_AUDIT_*``) and be overridden by an
explicit argument (the CLI flags pass theirs here).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from indexer.local_es.config import default_cache_dir, is_loopback_host

__all__ = [
    "DEFAULT_ACCESS_KEY_ID",
    "DEFAULT_SECRET_ACCESS_KEY",
    "DEFAULT_URL",
    "MAVEN_ARTIFACT",
    "S3PROXY_SHA512",
    "S3PROXY_VERSION",
    "LocalS3Config",
    "LocalS3ConfigError",
]

S3PROXY_VERSION = "2.6.0"
MAVEN_ARTIFACT = f"org.gaul:s3proxy:{S3PROXY_VERSION}:jar:jar-with-dependencies"
S3PROXY_SHA512 = (
    "87fcb2b4c8e010b6644e527ea40fb12d50bc2157f658b43df9420fe735c1c5c8"
    "11222863ea819e23bd49a7ee3280478648c33132f399067202fa12bf5e5de605"
)
"""SHA-512 of ``s3proxy-2.6.0-jar-with-dependencies.jar`` as Maven Central serves it
(its published SHA-1 is cada399d8a8155d40f82f6a3d22f0288c96046d0)."""

DEFAULT_URL = "http://127.0.0.1:9290"
DEFAULT_ACCESS_KEY_ID = "otel-audit-local"
DEFAULT_SECRET_ACCESS_KEY = "otel-audit-local-secret"

ENV_URL = "OTEL_AUDIT_S3_URL"
ENV_DATA = "OTEL_AUDIT_LOCAL_S3_DATA"
ENV_ACCESS_KEY_ID = "OTEL_AUDIT_S3_ACCESS_KEY_ID"
ENV_SECRET_ACCESS_KEY = "OTEL_AUDIT_S3_SECRET_ACCESS_KEY"


class LocalS3ConfigError(ValueError):
    """A setting of the local S3 server cannot work; the message names it."""


@dataclass(frozen=True)
class LocalS3Config:
    """Where the local S3 server listens, where it keeps objects, and its credentials."""

    url: str = DEFAULT_URL
    """``http://127.0.0.1:PORT``; read from OTEL_AUDIT_S3_URL."""
    cache_dir: Path | None = None
    """Where the jar is downloaded; None: beside the Elasticsearch download cache."""
    data_dir: Path | None = None
    """The server's directory (objects under ``data/``, properties, pid and log files);
    None: ``<cache_dir>/servers/<port>``. Read from OTEL_AUDIT_LOCAL_S3_DATA."""
    access_key_id: str = DEFAULT_ACCESS_KEY_ID
    """The one identity the server accepts (OTEL_AUDIT_S3_ACCESS_KEY_ID)."""
    secret_access_key: str = DEFAULT_SECRET_ACCESS_KEY
    """Its secret (OTEL_AUDIT_S3_SECRET_ACCESS_KEY)."""
    start_timeout_s: float = 60.0
    """How long ``start`` waits for the port to answer as S3."""
    stop_timeout_s: float = 15.0
    """How long ``stop`` waits after SIGTERM before SIGKILL."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise LocalS3ConfigError(
                f"{ENV_URL}: {self.url!r} must be http://HOST:PORT (the local server has no TLS)"
            )
        if parts.path not in ("", "/"):
            raise LocalS3ConfigError(f"{ENV_URL}: {self.url!r} must not have a path")
        if not self.access_key_id or not self.secret_access_key:
            raise LocalS3ConfigError("the access key id and secret must not be empty")

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        url: str | None = None,
        data_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ) -> LocalS3Config:
        """Build the config from the environment; explicit arguments win over it."""
        env = os.environ if environ is None else environ
        data = data_dir if data_dir is not None else env.get(ENV_DATA) or None
        if cache_dir is None:
            explicit = env.get("OTEL_AUDIT_CACHE_DIR")
            cache = Path(explicit) if explicit else default_cache_dir(env).parent / "s3proxy"
        else:
            cache = Path(cache_dir)
        return cls(
            url=url or env.get(ENV_URL) or DEFAULT_URL,
            cache_dir=cache.expanduser().absolute(),
            data_dir=Path(data).expanduser().absolute() if data is not None else None,
            access_key_id=env.get(ENV_ACCESS_KEY_ID) or DEFAULT_ACCESS_KEY_ID,
            secret_access_key=env.get(ENV_SECRET_ACCESS_KEY) or DEFAULT_SECRET_ACCESS_KEY,
        )

    @property
    def host(self) -> str:
        """Host of the URL."""
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        """Port of the URL."""
        port = urlsplit(self.url).port
        assert port is not None  # checked in __post_init__
        return port

    @property
    def base_url(self) -> str:
        """The URL without a trailing slash."""
        return self.url.rstrip("/")

    @property
    def resolved_cache_dir(self) -> Path:
        """The download cache with the default applied."""
        return self.cache_dir if self.cache_dir is not None else default_cache_dir().parent

    @property
    def server_dir(self) -> Path:
        """The server's own directory with the default applied."""
        if self.data_dir is not None:
            return self.data_dir
        return self.resolved_cache_dir / "servers" / str(self.port)

    def require_loopback(self) -> None:
        """Refuse to start a server for a URL that is not on this machine."""
        if not is_loopback_host(self.host):
            raise LocalS3ConfigError(
                f"{ENV_URL}: host {self.host!r} is not a loopback address; only a server on "
                "this machine can be started locally"
            )
