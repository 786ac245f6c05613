"""A local Elasticsearch node, or cluster of nodes, for development and tests.

Runs the pinned Elasticsearch server (the integ-test zip from Maven Central) on this
machine's Java, bound to a loopback address, as an unprivileged account when invoked
as root. Used by ``otel-audit local-es start|stop|status``, ``make run`` and the test
fixtures::

    from indexer.local_es.manager import LocalElasticsearch

    with LocalElasticsearch(url="http://127.0.0.1:9210") as node:
        ...  # node.url answers; stopped on exit only if this block started it

    with LocalElasticsearch(url="http://127.0.0.1:9230", nodes=3) as cluster:
        cluster.kill_node(1)      # SIGKILL one node (drills)
        cluster.ensure_started()  # brings it back and waits for all three

    secured = LocalElasticsearch(url="https://127.0.0.1:9240",
                                 users=[LocalUser("writer", "pw-writer", ("audit_writer",))],
                                 roles={"audit_writer": {...}})

``ensure_started()`` is idempotent: a healthy Elasticsearch already at the URL (with every
node joined) is reused, and nodes of ours that are down are started again. ``stop()``
only stops nodes this manager started (found by their pid files), all at once.
"""

from __future__ import annotations

import base64
import fcntl
import http.client
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from indexer.local_es.cluster import ClusterPlan, Member, plan_cluster
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
    hand_over,
    launch,
    log_tail,
    node_settings,
    prepare_node_dir,
    read_pid,
    terminate_all,
    wait_port_free,
    write_node_config,
)
from indexer.local_es.probe import PLAIN, Access, PortState, Probe, get_json, probe
from indexer.local_es.security import (
    ELASTIC_USER,
    EsTools,
    LocalUser,
    SecurityFiles,
    copy_realm,
    ensure_security_files,
    install_node_certs,
    prepare_realm,
    security_settings,
    write_roles,
)

__all__ = [
    "ELASTIC_USER",
    "ES_SHA512",
    "ES_VERSION",
    "ChecksumMismatchError",
    "DistributionError",
    "LocalElasticsearch",
    "LocalEsConfig",
    "LocalEsConfigError",
    "LocalEsError",
    "LocalUser",
    "MemberStatus",
    "MissingToolError",
    "NodeStatus",
    "PortInUseError",
    "StartError",
    "StopError",
]

_PROGRESS_EVERY_S = 5.0
# A file-realm change is picked up on the node's high-frequency reload (5 s by default).
_REALM_RELOAD_TIMEOUT_S = 30.0


def _stderr(message: str) -> None:
    print(f"local-es: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class MemberStatus:
    """One node of the cluster, as ``status`` sees it."""

    name: str
    url: str
    running: bool
    """Its HTTP port answers as Elasticsearch."""
    pid: int | None
    """The pid of the node this manager started, when alive."""
    node_dir: str


@dataclass(frozen=True)
class NodeStatus:
    """What ``status`` reports about the URL (the first node of a cluster)."""

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
    nodes: int = 1
    """Nodes this directory's cluster has."""
    joined: int = 0
    """Nodes the cluster's health counts as joined."""
    secure: bool = False
    """The secured mode (HTTPS, passwords)."""
    ca_file: str | None = None
    """The CA certificate clients trust (secured mode)."""
    members: tuple[MemberStatus, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["members"] = [asdict(m) for m in self.members]
        return {"state": "running" if self.running else "stopped", **out}


class LocalElasticsearch:
    """Start, stop and inspect the local Elasticsearch node (or cluster) at one URL.

    Arguments left as None come from the environment (see :class:`LocalEsConfig`).
    ``users`` and ``roles`` (secured mode) are added to the file realm on start.
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
        nodes: int | None = None,
        users: Sequence[LocalUser] = (),
        roles: Mapping[str, Any] | None = None,
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
            nodes=nodes,
        )
        if (users or roles) and not self.config.secure:
            raise LocalEsConfigError(
                f"users and roles need the secured mode: use an https:// URL, not {self.url}"
            )
        self._users = tuple(users)
        self._roles = dict(roles or {})
        self._progress = progress or (lambda _msg: None)
        self._started_here = False

    # -- what and where ------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the (first) node."""
        return self.config.base_url

    @property
    def plan(self) -> ClusterPlan:
        """Every node's name, ports and directory (read from the directory each time)."""
        return plan_cluster(self.config)

    @property
    def urls(self) -> list[str]:
        """Base URLs of every node of the cluster."""
        return [self.config.node_url(m.index) for m in self.plan.members]

    @property
    def layout(self) -> NodeLayout:
        """Files of the (first) node's directory."""
        return self.plan.members[0].layout

    @property
    def security(self) -> SecurityFiles:
        """CA, certificates and passwords of the secured mode (made on the first start)."""
        if not self.config.secure:
            raise LocalEsConfigError(f"{self.url} is not the secured mode (https://)")
        return SecurityFiles(self.config.node_dir / "security")

    def elastic_password(self) -> str:
        """The ``elastic`` superuser's password (secured mode)."""
        return self.security.elastic_password()

    def client_options(
        self, user: str = ELASTIC_USER, password: str | None = None
    ) -> dict[str, Any]:
        """Keyword arguments for an ``elasticsearch.Elasticsearch`` of this node or cluster
        (hosts; in the secured mode also the CA and basic authentication)."""
        options: dict[str, Any] = {"hosts": self.urls}
        if self.config.secure:
            secret = password if password is not None else self.elastic_password()
            options["basic_auth"] = (user, secret)
            options["ca_certs"] = str(self.security.ca_cert)
        return options

    # -- start ---------------------------------------------------------------

    def ensure_started(self) -> bool:
        """Make sure a healthy Elasticsearch with every node joined answers at the URL.

        Returns True when this call started the cluster, False when one was reused (nodes
        of it that were down are started again; this is how drills bring a node back).
        """
        cfg = self.config
        cfg.require_loopback()
        with self._port_lock():
            plan = self.plan
            access = self._access()
            running = self._running(plan)
            if not running:
                found = probe(cfg.host, cfg.http_port, access=access, nodes=plan.size)
                if found.state is PortState.HEALTHY:
                    self._progress(
                        f"reusing Elasticsearch {found.version} at {self.url} (not started by "
                        f"otel-audit), health {found.health}"
                    )
                    return False
            missing = [m for m in plan.members if m.index not in running]
            for member in missing:
                found = probe(cfg.host, member.http_port, access=access)
                if found.state is not PortState.FREE:
                    raise PortInUseError(member.http_port, found.detail or found.state.value)
            if cfg.secure:
                self._prepare_security(plan, fresh=bool(missing))
            if missing:
                self._start_members(plan, missing)
            else:
                self._progress(f"{self._what(plan)} at {self.url} is running, waiting for health")
                self._wait_healthy(plan, {}, time.monotonic())
                return False
            if running:
                return False
            self._started_here = True
            return True

    def _what(self, plan: ClusterPlan) -> str:
        return "node" if plan.size == 1 else f"{plan.size}-node cluster"

    def _start_members(self, plan: ClusterPlan, members: Sequence[Member]) -> None:
        cfg = self.config
        java = find_java()
        home = cfg.resolved_cache_dir / f"elasticsearch-{ES_VERSION}"
        if not (home / "bin" / "elasticsearch").is_file():
            find_mvn()  # fail before any download work when mvn is missing
        home = ensure_distribution(cfg.resolved_cache_dir)
        user = ensure_service_user() if _is_root() else None
        plan = plan.with_free_ports({m.index for m in members})
        plan.write_manifest()
        if user is not None and plan.size > 1:
            os.chown(plan.root, user.pw_uid, user.pw_gid)
        for member in (plan.members[m.index] for m in members):
            self._configure(plan, member, home, user)
        mode = "secured (HTTPS) " if plan.secure else ""
        names = ", ".join(f"{m.http_port}/{plan.members[m.index].transport_port}" for m in members)
        self._progress(
            f"starting {mode}Elasticsearch {ES_VERSION}: {len(members)} of {plan.size} node(s) "
            f"at {self.url} (http/transport {names}, heap {cfg.heap}, dir {plan.root})"
        )
        began = time.monotonic()
        launchers = {
            m.index: launch(cfg.heap, home, java, plan.members[m.index].layout, user)
            for m in members
        }
        try:
            self._wait_healthy(plan, launchers, began)
        except BaseException:
            self._kill_after_failed_start(plan, members)
            raise
        self._progress(
            f"Elasticsearch is up at {self.url} ({plan.size} node(s)) after "
            f"{time.monotonic() - began:.1f} s"
        )

    def _configure(self, plan: ClusterPlan, member: Member, home: Path, user: Any) -> None:
        """Write one node's directory and config (and its security material)."""
        layout = member.layout
        prepare_node_dir(layout, home)
        settings = node_settings(
            layout,
            node_name=member.name,
            bind_host=plan.bind_host,
            http_port=member.http_port,
            transport_port=member.transport_port,
            security=security_settings(plan.secure),
            seed_hosts=plan.seed_hosts(),
            initial_masters=plan.initial_masters(),
        )
        write_node_config(layout, settings)
        if plan.secure:
            install_node_certs(self.security, layout.config)
            copy_realm(self.security, layout.config)
        hand_over(layout.root, home, user)

    def _prepare_security(self, plan: ClusterPlan, *, fresh: bool) -> None:
        """CA, certificate, password and realm once; then this manager's users and roles.

        Before a start (``fresh``) every user is (re)written; on a running cluster only
        the users it does not know yet are added, since each costs a JVM run.
        """
        files = ensure_security_files(plan.root)
        tools = self._tools()
        if tools.user is not None:
            # The tools run as the node's account, which must reach security/realm/.
            os.chown(plan.root, tools.user.pw_uid, tools.user.pw_gid)
        prepare_realm(files, tools)
        if self._roles:
            write_roles(files.realm, self._roles)
        known = files.user_names()
        users = self._users if fresh else tuple(u for u in self._users if u.name not in known)
        if fresh:
            if users:
                tools.add_file_users(files.realm, users)
        elif users or self._roles:
            self.add_users(users)

    def _tools(self) -> EsTools:
        java = find_java()
        home = ensure_distribution(self.config.resolved_cache_dir)
        return EsTools(home, java, ensure_service_user() if _is_root() else None)

    def _wait_healthy(
        self, plan: ClusterPlan, launchers: Mapping[int, subprocess.Popen[bytes]], began: float
    ) -> None:
        cfg = self.config
        # Several JVMs starting at once on a small machine take longer than one.
        timeout_s = cfg.start_timeout_s * (1 + 0.5 * (plan.size - 1))
        deadline = began + timeout_s
        next_report = time.monotonic() + _PROGRESS_EVERY_S
        access = self._access()
        while True:
            now = time.monotonic()
            for index, launcher in launchers.items():
                if launcher.poll() not in (None, 0):
                    layout = plan.members[index].layout
                    raise StartError(
                        f"Elasticsearch node {plan.members[index].name} failed to start "
                        f"(launcher exit code {launcher.returncode})",
                        log_tail(layout),
                    )
            found = self._probe_any(plan, access)
            if found.state is PortState.HEALTHY:
                return
            for index, launcher in launchers.items():
                member = plan.members[index]
                if launcher.returncode == 0 and self._pid_of(member) is None:
                    raise StartError(
                        f"Elasticsearch node {member.name} exited during startup",
                        log_tail(member.layout),
                    )
            if now > deadline:
                raise StartError(
                    f"Elasticsearch at {self.url} was not healthy within {timeout_s:.0f} s "
                    f"(last state: {found.state.value} {found.detail})",
                    "\n".join(log_tail(m.layout, 20) for m in plan.members),
                )
            if now >= next_report:
                self._progress(
                    f"waiting for {self.url}: {now - began:.0f} s, {found.state.value} "
                    f"{found.detail}".rstrip()
                )
                next_report = now + _PROGRESS_EVERY_S
            time.sleep(0.5)

    def _probe_any(self, plan: ClusterPlan, access: Access) -> Probe:
        """The first node's view; when it is down (a drill), any other's."""
        first: Probe | None = None
        for member in plan.members:
            found = probe(self.config.host, member.http_port, timeout_s=2.0, access=access,
                          nodes=plan.size)  # fmt: skip
            if found.state is PortState.HEALTHY:
                return found
            first = first or found
        assert first is not None
        return first

    def _kill_after_failed_start(self, plan: ClusterPlan, members: Sequence[Member]) -> None:
        pids = {}
        for member in members:
            root = member.layout.root
            for pid in {p for p in (self._pid_of(member), *find_node_pids(root)) if p is not None}:
                pids[pid] = root
        terminate_all(pids, min(self.config.stop_timeout_s, 10.0))

    # -- one node of the cluster (drills) ------------------------------------

    def kill_node(self, index: int, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` (SIGKILL by default) to node ``index``; returns its pid.

        Nothing waits: the node's process is gone (or going) when this returns, and
        :meth:`ensure_started` starts it again.
        """
        member = self._member(index)
        pid = self._pid_of(member)
        if pid is None:
            raise StopError(f"node {member.name} ({member.layout.root}) is not running")
        self._progress(f"sending signal {sig} to node {member.name} (pid {pid})")
        os.kill(pid, sig)
        if sig == signal.SIGKILL:
            deadline = time.monotonic() + 10
            while es_process_alive(pid, member.layout.root) and time.monotonic() < deadline:
                time.sleep(0.05)
        return pid

    def node_pid(self, index: int) -> int | None:
        """The pid of node ``index`` when it runs."""
        return self._pid_of(self._member(index))

    def _member(self, index: int) -> Member:
        plan = self.plan
        if not 0 <= index < plan.size:
            raise LocalEsConfigError(f"node {index}: the cluster has nodes 0..{plan.size - 1}")
        return plan.members[index]

    # -- users (secured mode) ------------------------------------------------

    def add_users(self, users: Sequence[LocalUser], roles: Mapping[str, Any] | None = None) -> None:
        """Add (or replace) file-realm users and roles on the running cluster, and wait
        until every node accepts the new users' passwords."""
        files = self.security
        tools = self._tools()
        prepare_realm(files, tools)
        if roles:
            write_roles(files.realm, roles)
            self._roles.update(roles)
        tools.add_file_users(files.realm, users)
        self._users = tuple({u.name: u for u in (*self._users, *users)}.values())
        plan = self.plan
        for member in plan.members:
            if member.layout.config.is_dir():
                copy_realm(files, member.layout.config)
        for member in plan.members:
            if self._pid_of(member) is None:
                continue
            for local in users:
                self._wait_user_ready(member, local)

    def _wait_user_ready(self, member: Member, local: LocalUser) -> None:
        """Wait until the node authenticates the user and has loaded a role granting it
        something (users and roles.yml are reloaded separately)."""
        access = Access(tls=self._tls_context(), auth=_basic(local.name, local.password))
        deadline = time.monotonic() + _REALM_RELOAD_TIMEOUT_S
        detail = ""
        while True:
            try:
                status, body = get_json(
                    self.config.host, member.http_port, "/_security/user/_privileges", access
                )
            except (OSError, http.client.HTTPException) as exc:
                status, body, detail = 0, None, str(exc)
            if status == 200 and isinstance(body, dict):
                granted = any(body.get(key) for key in ("cluster", "indices", "applications"))
                if granted or not local.roles:
                    return
                detail = f"authenticated, but roles {', '.join(local.roles)} grant nothing yet"
            elif status:
                detail = f"HTTP {status}"
            if time.monotonic() > deadline:
                raise LocalEsError(
                    f"node {member.name} did not accept user {local.name!r} within "
                    f"{_REALM_RELOAD_TIMEOUT_S:.0f} s ({detail})"
                )
            time.sleep(0.25)

    # -- stop ----------------------------------------------------------------

    def stop(self) -> bool:
        """Stop every node this manager started; True when something was stopped.

        Stopping a stopped cluster is not an error. A foreign Elasticsearch at the URL
        (no pid file of ours) is left alone and reported with :class:`StopError`.
        """
        cfg = self.config
        plan = self.plan
        pids: dict[int, Path] = {}
        for member in plan.members:
            root = member.layout.root
            for pid in {p for p in (self._pid_of(member), *find_node_pids(root)) if p is not None}:
                pids[pid] = root
        if not pids:
            if cfg.is_loopback:
                found = probe(cfg.host, cfg.http_port, access=self._access())
                if found.state is not PortState.FREE:
                    raise StopError(
                        f"{self.url} is served by a process otel-audit did not start "
                        f"(no live node for {plan.root}); leaving it alone"
                    )
            self._started_here = False
            return False
        configured = self._configured_http_port(plan.members[0].layout)
        if configured is not None and configured != cfg.http_port:
            raise StopError(
                f"{plan.root} holds the node on port {configured}, not {self.url}; "
                "leaving it alone (give the node's own data directory)"
            )
        self._progress(
            f"stopping Elasticsearch at {self.url} ({self._what(plan)}, pid "
            f"{', '.join(str(p) for p in sorted(pids))})"
        )
        for pid in terminate_all(pids, cfg.stop_timeout_s):
            self._progress(f"pid {pid} ignored SIGTERM for {cfg.stop_timeout_s:.0f} s: killed")
        for member in plan.members:
            wait_port_free(cfg.host, member.http_port, timeout_s=15.0)
            member.layout.pid_file.unlink(missing_ok=True)
        self._started_here = False
        ports = ", ".join(str(m.http_port) for m in plan.members)
        self._progress(f"stopped; port(s) {ports} free")
        return True

    @staticmethod
    def _configured_http_port(layout: NodeLayout) -> int | None:
        """The http.port written into this node directory's config, if any."""
        try:
            text = (layout.config / "elasticsearch.yml").read_text(encoding="utf-8")
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
        plan = self.plan
        access = self._access()
        members = []
        first: Probe | None = None
        for member in plan.members:
            found = probe(cfg.host, member.http_port, access=access, nodes=plan.size)
            first = first or found
            members.append(
                MemberStatus(
                    name=member.name,
                    url=cfg.node_url(member.index),
                    running=found.state in (PortState.HEALTHY, PortState.UNHEALTHY),
                    pid=self._pid_of(member),
                    node_dir=str(member.layout.root),
                )
            )
        assert first is not None
        detail = first.detail
        if first.state is PortState.FOREIGN:
            detail = f"port {cfg.http_port} is taken by something else: {first.detail}"
        secured = self.security if cfg.secure else None
        return NodeStatus(
            url=self.url,
            running=members[0].running,
            managed=members[0].pid is not None,
            pid=members[0].pid,
            version=first.version,
            health=first.health,
            node_dir=str(plan.root),
            detail=detail,
            nodes=plan.size,
            joined=first.nodes,
            secure=cfg.secure,
            ca_file=str(secured.ca_cert) if secured and secured.ca_cert.is_file() else None,
            members=tuple(members) if plan.size > 1 else (),
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

    def _pid_of(self, member: Member) -> int | None:
        pid = read_pid(member.layout)
        if pid is not None and es_process_alive(pid, member.layout.root):
            return pid
        return None

    def _running(self, plan: ClusterPlan) -> dict[int, int]:
        """Node index -> pid of the nodes of ours that are alive."""
        alive = {}
        for member in plan.members:
            pid = self._pid_of(member)
            if pid is not None:
                alive[member.index] = pid
        return alive

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.config.secure:
            return None
        ca = self.security.ca_cert
        if ca.is_file():
            return ssl.create_default_context(cafile=str(ca))
        # Never started: nothing of ours can answer; still speak TLS to whatever does.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    def _access(self) -> Access:
        if not self.config.secure:
            return PLAIN
        files = self.security
        password = files.elastic_password() if files.elastic_password_file.is_file() else ""
        auth = _basic(ELASTIC_USER, password) if password else None
        return Access(tls=self._tls_context(), auth=auth)

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


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _is_root() -> bool:
    return os.geteuid() == 0
