"""Settings of the local Elasticsearch node or cluster: one frozen object, defaults in one place.

Every field can come from the environment (``OTEL_AUDIT_*``) and be overridden by an
explicit argument (the CLI flags pass theirs here).

The URL's scheme chooses the mode: ``http://`` runs security off, ``https://`` runs the
secured node (TLS, passwords, file users; see :mod:`indexer.local_es.security`). With
``nodes`` > 1 the URL is the first node's; node ``i`` listens on the URL's port + ``i``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from indexer.local_es.errors import LocalEsConfigError

__all__ = [
    "DEFAULT_HEAP",
    "DEFAULT_START_TIMEOUT_S",
    "DEFAULT_STOP_TIMEOUT_S",
    "DEFAULT_URL",
    "ES_SHA512",
    "ES_VERSION",
    "MAX_NODES",
    "LocalEsConfig",
    "default_cache_dir",
    "is_loopback_host",
]

ES_VERSION = "8.19.21"
ES_SHA512 = (
    "cf6b0a93860d329937ae7f913ec5073b0c726c77639764b93fc83a304aa1dd9d"
    "4defcfa2849948eea3b0b47c2065f994908603939fc2a4774c9c4d868c5ec1dd"
)

DEFAULT_URL = "http://127.0.0.1:9200"
DEFAULT_HEAP = "512m"
DEFAULT_START_TIMEOUT_S = 120.0
DEFAULT_STOP_TIMEOUT_S = 30.0

ENV_URL = "OTEL_AUDIT_ES_URL"
ENV_CACHE_DIR = "OTEL_AUDIT_CACHE_DIR"
ENV_DATA = "OTEL_AUDIT_LOCAL_ES_DATA"
ENV_HEAP = "OTEL_AUDIT_LOCAL_ES_HEAP"
ENV_START_TIMEOUT = "OTEL_AUDIT_LOCAL_ES_START_TIMEOUT_S"
ENV_NODES = "OTEL_AUDIT_LOCAL_ES_NODES"

MAX_NODES = 9
"""More nodes than this on one machine is a mistake, not a test."""

# Root's home is private (0700), so an unpacked tree under it is unreadable by the
# unprivileged account Elasticsearch must run as; root gets a system-wide cache instead.
ROOT_CACHE_DIR = Path("/var/cache/otel-audit/elasticsearch")

_HEAP_RE = re.compile(r"^[1-9][0-9]*[kKmMgG]$")


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the distribution is downloaded and unpacked unless OTEL_AUDIT_CACHE_DIR says."""
    env = os.environ if environ is None else environ
    explicit = env.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit).expanduser().absolute()
    if os.geteuid() == 0:
        return ROOT_CACHE_DIR
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return (base / "otel-audit" / "elasticsearch").absolute()


def is_loopback_host(host: str) -> bool:
    """True when ``host`` names this machine's loopback interface."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class LocalEsConfig:
    """Where the local node listens, where it keeps its files, and how long to wait."""

    url: str = DEFAULT_URL
    """Base URL of the (first) node, ``http://host:port`` or ``https://`` for the secured
    mode; read from OTEL_AUDIT_ES_URL."""
    cache_dir: Path | None = None
    """Download and unpack directory; None means :func:`default_cache_dir`."""
    data_dir: Path | None = None
    """The node's own directory (data, logs, config, snapshot repo, pid file); None
    means ``<cache_dir>/nodes/<port>``. Read from OTEL_AUDIT_LOCAL_ES_DATA."""
    heap: str = DEFAULT_HEAP
    """JVM heap for -Xms/-Xmx, e.g. ``512m``; read from OTEL_AUDIT_LOCAL_ES_HEAP."""
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    """How long ``start`` waits for yellow health before failing."""
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S
    """How long ``stop`` waits after SIGTERM before sending SIGKILL."""
    nodes: int | None = None
    """Nodes of the cluster; None means what the directory holds (``cluster.json``), else 1.
    Read from OTEL_AUDIT_LOCAL_ES_NODES."""

    def __post_init__(self) -> None:
        _host, port = self._parsed()
        if self.nodes is not None:
            if not 1 <= self.nodes <= MAX_NODES:
                raise LocalEsConfigError(
                    f"{ENV_NODES}/--nodes: {self.nodes} is not between 1 and {MAX_NODES}"
                )
            if port + self.nodes - 1 > 65535:
                raise LocalEsConfigError(
                    f"{ENV_NODES}/--nodes: {self.nodes} nodes from port {port} run past 65535"
                )
        if not _HEAP_RE.match(self.heap):
            raise LocalEsConfigError(
                f"{ENV_HEAP}/--heap: {self.heap!r} is not a JVM heap size like 512m or 1g"
            )
        if self.start_timeout_s <= 0:
            raise LocalEsConfigError(f"start timeout must be > 0 s, got {self.start_timeout_s}")
        if self.stop_timeout_s <= 0:
            raise LocalEsConfigError(f"stop timeout must be > 0 s, got {self.stop_timeout_s}")

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        url: str | None = None,
        cache_dir: str | Path | None = None,
        data_dir: str | Path | None = None,
        heap: str | None = None,
        start_timeout_s: float | None = None,
        stop_timeout_s: float | None = None,
        nodes: int | None = None,
        secure: bool = False,
    ) -> LocalEsConfig:
        """Build the config from the environment; explicit arguments win over it.

        ``secure=True`` turns an ``http://`` URL into the ``https://`` one of the secured
        mode (the CLI's ``--secure``).
        """
        env = os.environ if environ is None else environ
        if nodes is None and env.get(ENV_NODES):
            raw_nodes = env[ENV_NODES]
            try:
                nodes = int(raw_nodes)
            except ValueError:
                raise LocalEsConfigError(f"{ENV_NODES}: {raw_nodes!r} is not a number") from None
        timeout = start_timeout_s
        if timeout is None and env.get(ENV_START_TIMEOUT):
            raw = env[ENV_START_TIMEOUT]
            try:
                timeout = float(raw)
            except ValueError:
                raise LocalEsConfigError(f"{ENV_START_TIMEOUT}: {raw!r} is not a number") from None
        data = data_dir if data_dir is not None else env.get(ENV_DATA) or None
        cache = cache_dir if cache_dir is not None else default_cache_dir(env)
        base = url or env.get(ENV_URL) or DEFAULT_URL
        if secure and base.startswith("http://"):
            base = "https://" + base.removeprefix("http://")
        return cls(
            url=base,
            cache_dir=Path(cache).expanduser().absolute(),
            data_dir=Path(data).expanduser().absolute() if data is not None else None,
            heap=heap or env.get(ENV_HEAP) or DEFAULT_HEAP,
            start_timeout_s=timeout if timeout is not None else DEFAULT_START_TIMEOUT_S,
            stop_timeout_s=stop_timeout_s if stop_timeout_s is not None else DEFAULT_STOP_TIMEOUT_S,
            nodes=nodes,
        )

    def _parsed(self) -> tuple[str, int]:
        try:
            parts = urlsplit(self.url)
            port = parts.port
        except ValueError as exc:
            raise LocalEsConfigError(f"{ENV_URL}: {self.url!r} is not a valid URL: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise LocalEsConfigError(
                f"{ENV_URL}: {self.url!r} must use http:// (security off) or https:// "
                "(the secured node)"
            )
        if not parts.hostname:
            raise LocalEsConfigError(f"{ENV_URL}: {self.url!r} has no host")
        if parts.path not in ("", "/"):
            raise LocalEsConfigError(f"{ENV_URL}: {self.url!r} must not have a path")
        return parts.hostname, port if port is not None else 9200

    @property
    def host(self) -> str:
        """Host part of the URL."""
        return self._parsed()[0]

    @property
    def http_port(self) -> int:
        """HTTP port of the URL (9200 when the URL has none)."""
        return self._parsed()[1]

    @property
    def secure(self) -> bool:
        """The secured mode: HTTPS, authentication, file users."""
        return self._scheme() == "https"

    def _scheme(self) -> str:
        return urlsplit(self.url).scheme

    def node_url(self, index: int) -> str:
        """URL of node ``index`` of the cluster (its HTTP port is the URL's + index)."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"{self._scheme()}://{host}:{self.http_port + index}"

    @property
    def base_url(self) -> str:
        """The URL without a trailing slash."""
        return self.url.rstrip("/")

    @property
    def is_loopback(self) -> bool:
        """Whether this URL may be started on this machine."""
        return is_loopback_host(self.host)

    @property
    def bind_host(self) -> str:
        """Value for ``network.host``; ``localhost`` binds to 127.0.0.1 only."""
        return "127.0.0.1" if self.host.lower() == "localhost" else self.host

    @property
    def resolved_cache_dir(self) -> Path:
        """The cache directory with the default applied."""
        return self.cache_dir if self.cache_dir is not None else default_cache_dir()

    @property
    def node_dir(self) -> Path:
        """The node's (or the cluster's) own directory with the default applied; the nodes
        of a cluster live in ``node-<i>`` directories side by side inside it."""
        if self.data_dir is not None:
            return self.data_dir
        return self.resolved_cache_dir / "nodes" / str(self.http_port)

    def require_loopback(self) -> None:
        """Refuse to start a node for a URL that is not on this machine."""
        if not self.is_loopback:
            raise LocalEsConfigError(
                f"{ENV_URL}: host {self.host!r} is not a loopback address; only a node on "
                "this machine (127.0.0.1, localhost, ::1) can be started locally"
            )
