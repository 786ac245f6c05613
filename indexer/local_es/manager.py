"""A local Elasticsearch node for development and tests.

Runs the pinned Elasticsearch server (the integ-test zip from Maven Central) on this
machine's Java, bound to a loopback address, as an unprivileged account when invoked
as root. Used by ``otel-audit local-es start|stop|status``, ``make run`` and the test
fixtures::

    from indexer.local_es.manager import LocalElasticsearch

    with LocalElasticsearch(url="http://127.0.0.1:9210") as node:
        ...  # node.url answers; stopped on exit only if this block started it

``ensure_started()`` is idempotent: a healthy Elasticsearch already at the URL is
reused. ``stop()`` only stops a node this manager started (found by its pid file).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from indexer.local_es.config import ES_SHA512, ES_VERSION, LocalEsConfig
from indexer.local_es.dist import ensure_distribution, find_java, find_mvn
from indexer.local_es.errors import (
    ChecksumMismatchError,
    DistributionError,
    LocalEsConfigError,
    LocalEsError,
    MissingToolError,
    PortInUseError,
    StartError,
    StopError,
)
from indexer.local_es.node import (
    NodeLayout,
    ensure_service_user,
    es_process_alive,
    find_node_pids,
    launch,
    log_tail,
    pick_transport_port,
    prepare_node_dir,
    read_pid,
    terminate,
    wait_port_free,
)
from indexer.local_es.probe import PortState, probe

__all__ = [
    "ES_SHA512",
    "ES_VERSION",
    "ChecksumMismatchError",
    "DistributionError",
    "LocalElasticsearch",
    "LocalEsConfig",
    "LocalEsConfigError",
    "LocalEsError",
    "MissingToolError",
    "NodeStatus",
    "PortInUseError",
    "StartError",
    "StopError",
]

_PROGRESS_EVERY_S = 5.0


def _stderr(message: str) -> None:
    print(f"local-es: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class NodeStatus:
    """What ``status`` reports about the URL."""

    url: str
    running: bool
    """Something answers as Elasticsearch at the URL."""
    managed: bool
    """A node started by this manager (pid file) is alive for this URL."""
    pid: int | None
    version: str | None
    health: str | None
    node_dir: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"state": "running" if self.running else "stopped", **asdict(self)}


class LocalElasticsearch:
    """Start, stop and inspect the local Elasticsearch node at one URL.

    Arguments left as None come from the environment (see :class:`LocalEsConfig`).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        data_dir: str | Path | None = None,
        heap: str | None = None,
        cache_dir: str | Path | None = None,
        start_timeout_s: float | None = None,
        stop_timeout_s: float | None = None,
        config: LocalEsConfig | None = None,
        progress: Callable[[str], None] | None = _stderr,
    ) -> None:
        self.config = config or LocalEsConfig.from_env(
            url=url,
            data_dir=data_dir,
            heap=heap,
            cache_dir=cache_dir,
            start_timeout_s=start_timeout_s,
            stop_timeout_s=stop_timeout_s,
        )
        self._progress = progress or (lambda _msg: None)
        self._started_here = False

    @property
    def url(self) -> str:
        """Base URL of the node."""
        return self.config.base_url

    @property
    def layout(self) -> NodeLayout:
        """Files of the node directory."""
        return NodeLayout(self.config.node_dir)

    # -- start ---------------------------------------------------------------

    def ensure_started(self) -> bool:
        """Make sure a healthy Elasticsearch answers at the URL.

        Returns True when this call started the node, False when one was reused.
        """
        cfg = self.config
        cfg.require_loopback()
        with self._port_lock():
            found = probe(cfg.host, cfg.http_port)
            if found.state is PortState.HEALTHY:
                owner = "" if self._our_pid() else " (not started by otel-audit)"
                self._progress(
                    f"reusing Elasticsearch {found.version} at {self.url}{owner}, "
                    f"health {found.health}"
                )
                return False
            pid = self._our_pid()
            if pid is not None:
                # Ours, still starting (or restarting after a red spell): wait for it.
                self._progress(f"node at {self.url} (pid {pid}) is not healthy yet, waiting")
                self._wait_healthy(None, time.monotonic())
                return False
            if found.state is not PortState.FREE:
                raise PortInUseError(cfg.http_port, found.detail or found.state.value)
            self._start_new()
            self._started_here = True
            return True

    def _start_new(self) -> None:
        cfg = self.config
        java = find_java()
        home = cfg.resolved_cache_dir / f"elasticsearch-{ES_VERSION}"
        if not (home / "bin" / "elasticsearch").is_file():
            find_mvn()  # fail before any download work when mvn is missing
        home = ensure_distribution(cfg.resolved_cache_dir)
        user = ensure_service_user() if _is_root() else None
        transport_port = pick_transport_port(cfg.http_port, cfg.bind_host)
        layout = prepare_node_dir(cfg, home, transport_port, user)
        self._progress(
            f"starting Elasticsearch {ES_VERSION} at {self.url} (heap {cfg.heap}, "
            f"transport {transport_port}, dir {layout.root})"
        )
        began = time.monotonic()
        launcher = launch(cfg, home, java, layout, user)
        try:
            self._wait_healthy(launcher, began)
        except BaseException:
            self._kill_after_failed_start()
            raise
        self._progress(f"Elasticsearch is up at {self.url} after {time.monotonic() - began:.1f} s")

    def _wait_healthy(self, launcher: subprocess.Popen[bytes] | None, began: float) -> None:
        cfg = self.config
        deadline = began + cfg.start_timeout_s
        next_report = time.monotonic() + _PROGRESS_EVERY_S
        while True:
            now = time.monotonic()
            if launcher is not None and launcher.poll() not in (None, 0):
                raise StartError(
                    f"Elasticsearch at {self.url} failed to start "
                    f"(launcher exit code {launcher.returncode})",
                    log_tail(self.layout),
                )
            found = probe(cfg.host, cfg.http_port, timeout_s=2.0)
            if found.state is PortState.HEALTHY:
                return
            launcher_done = launcher is None or launcher.returncode == 0
            if launcher_done and self._our_pid() is None:
                raise StartError(
                    f"Elasticsearch at {self.url} exited during startup", log_tail(self.layout)
                )
            if now > deadline:
                raise StartError(
                    f"Elasticsearch at {self.url} was not healthy within "
                    f"{cfg.start_timeout_s:.0f} s (last state: {found.state.value} "
                    f"{found.detail})",
                    log_tail(self.layout),
                )
            if now >= next_report:
                self._progress(f"waiting for {self.url}: {now - began:.0f} s, {found.state.value}")
                next_report = now + _PROGRESS_EVERY_S
            time.sleep(0.5)

    def _kill_after_failed_start(self) -> None:
        root = self.layout.root
        for pid in {p for p in (self._our_pid(), *find_node_pids(root)) if p is not None}:
            terminate(pid, root, min(self.config.stop_timeout_s, 10.0))

    # -- stop ----------------------------------------------------------------

    def stop(self) -> bool:
        """Stop the node this manager started; True when something was stopped.

        Stopping a stopped node is not an error. A foreign Elasticsearch at the URL
        (no pid file of ours) is left alone and reported with :class:`StopError`.
        """
        cfg = self.config
        pids = {p for p in (self._our_pid(), *find_node_pids(self.layout.root)) if p is not None}
        if not pids:
            if cfg.is_loopback:
                found = probe(cfg.host, cfg.http_port)
                if found.state is not PortState.FREE:
                    raise StopError(
                        f"{self.url} is served by a process otel-audit did not start "
                        f"(no live node for {self.layout.root}); leaving it alone"
                    )
            self._started_here = False
            return False
        configured = self._configured_http_port()
        if configured is not None and configured != cfg.http_port:
            raise StopError(
                f"{self.layout.root} holds the node on port {configured}, not {self.url}; "
                "leaving it alone (give the node's own data directory)"
            )
        for pid in sorted(pids):
            self._progress(f"stopping Elasticsearch at {self.url} (pid {pid})")
            if terminate(pid, self.layout.root, cfg.stop_timeout_s):
                self._progress(f"pid {pid} ignored SIGTERM for {cfg.stop_timeout_s:.0f} s: killed")
        wait_port_free(cfg.host, cfg.http_port, timeout_s=15.0)
        self.layout.pid_file.unlink(missing_ok=True)
        self._started_here = False
        self._progress(f"stopped; port {cfg.http_port} is free")
        return True

    def _configured_http_port(self) -> int | None:
        """The http.port written into this node directory's config, if any."""
        try:
            text = (self.layout.config / "elasticsearch.yml").read_text(encoding="utf-8")
        except OSError:
            return None
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "http.port":
                try:
                    return int(value.strip().strip("'\""))
                except ValueError:
                    return None
        return None

    # -- status --------------------------------------------------------------

    def status(self) -> NodeStatus:
        """Whether the URL answers as Elasticsearch, and what this manager knows of it."""
        cfg = self.config
        pid = self._our_pid()
        found = probe(cfg.host, cfg.http_port)
        running = found.state in (PortState.HEALTHY, PortState.UNHEALTHY)
        detail = found.detail
        if found.state is PortState.FOREIGN:
            detail = f"port {cfg.http_port} is taken by something else: {found.detail}"
        return NodeStatus(
            url=self.url,
            running=running,
            managed=pid is not None,
            pid=pid,
            version=found.version,
            health=found.health,
            node_dir=str(self.layout.root),
            detail=detail,
        )

    # -- context manager -----------------------------------------------------

    def __enter__(self) -> LocalElasticsearch:
        self.ensure_started()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._started_here:
            self.stop()

    # -- helpers -------------------------------------------------------------

    def _our_pid(self) -> int | None:
        pid = read_pid(self.layout)
        if pid is not None and es_process_alive(pid, self.layout.root):
            return pid
        return None

    @contextmanager
    def _port_lock(self) -> Iterator[None]:
        """Serialise concurrent starts of the same port (parallel test runs, make run)."""
        lock_dir = self.config.resolved_cache_dir / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with (lock_dir / f"port-{self.config.http_port}.lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _is_root() -> bool:
    return os.geteuid() == 0
