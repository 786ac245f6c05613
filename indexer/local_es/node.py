"""A node's files and process: config, service account, launch, identify, kill.

Layout of a node directory (``OTEL_AUDIT_LOCAL_ES_DATA``; for a cluster, each
``node-<i>`` directory inside it, see :mod:`indexer.local_es.cluster`)::

    config/            copy of the distribution's config + our elasticsearch.yml
                       (+ certs/, keystore, users and roles.yml in the secured mode)
    data/  logs/       path.data, path.logs
    repo/              path.repo (fs snapshot repositories)
    elasticsearch.pid  written by Elasticsearch itself (so the directory is the node's)
    console.log        stdout/stderr of the launcher

Elasticsearch refuses to run as root, so under root the node runs as a system account
that owns the node directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from indexer.local_es.dist import JavaRuntime
from indexer.local_es.errors import LocalEsError, PortInUseError
from indexer.local_es.probe import port_accepts

__all__ = [
    "CLUSTER_NAME",
    "FREE_PORTS",
    "SERVICE_USER",
    "NodeLayout",
    "ensure_service_user",
    "es_process_alive",
    "find_node_pids",
    "hand_over",
    "launch",
    "log_tail",
    "node_settings",
    "pick_transport_port",
    "prepare_node_dir",
    "read_pid",
    "terminate",
    "terminate_all",
    "wait_port_free",
    "write_node_config",
]

SERVICE_USER = "otel-audit-es"
CLUSTER_NAME = "otel-audit-local"
"""The name of a single node's cluster (a cluster of several is named after its port)."""
_ES_MAIN = "org.elasticsearch.bootstrap.Elasticsearch"


@dataclass(frozen=True)
class NodeLayout:
    """Paths inside one node directory."""

    root: Path
    cluster_name: str = CLUSTER_NAME

    @property
    def config(self) -> Path:
        """ES_PATH_CONF."""
        return self.root / "config"

    @property
    def data(self) -> Path:
        """path.data."""
        return self.root / "data"

    @property
    def logs(self) -> Path:
        """path.logs."""
        return self.root / "logs"

    @property
    def repo(self) -> Path:
        """path.repo, for fs snapshot repositories."""
        return self.root / "repo"

    @property
    def pid_file(self) -> Path:
        """Written by Elasticsearch (-p) and removed by it on clean exit."""
        return self.root / "elasticsearch.pid"

    @property
    def console_log(self) -> Path:
        """stdout/stderr of the launcher."""
        return self.root / "console.log"

    @property
    def server_log(self) -> Path:
        """The main server log (named after the cluster)."""
        return self.logs / f"{self.cluster_name}.log"

    def has_cluster_state(self) -> bool:
        """True once the node has joined (or formed) a cluster: it must not bootstrap again."""
        return (self.data / "_state").is_dir()


def pick_transport_port(http_port: int, host: str, taken: Collection[int] = ()) -> int:
    """http port + 100 when free (easy to recognise), otherwise any free port."""
    derived = http_port + 100
    if derived <= 65535 and derived not in taken and bindable(host, derived):
        return derived
    return free_port(host, taken)


# Below Linux's ephemeral range (32768-60999 by default): a port chosen there can be taken
# by any process's outgoing connection between our check and a (re)start that binds it.
FREE_PORTS = range(20000, 32000)


def free_port(host: str = "127.0.0.1", taken: Collection[int] = ()) -> int:
    """A port free on ``host`` now, outside the ephemeral range, so that a node or test
    server restarted on it later is not beaten to it by an outgoing connection."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.choice(FREE_PORTS)
        if port not in taken and bindable(host, port) and bindable(host, port + 100):
            return port
    raise OSError(f"no free port in {FREE_PORTS.start}-{FREE_PORTS.stop - 1} on {host}")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bindable(host: str, port: int) -> bool:
    """True when a listening socket could take host:port now."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def node_settings(
    layout: NodeLayout,
    *,
    node_name: str,
    bind_host: str,
    http_port: int,
    transport_port: int,
    security: Mapping[str, str | list[str]],
    seed_hosts: list[str] | None = None,
    initial_masters: list[str] | None = None,
) -> dict[str, str | list[str]]:
    """The elasticsearch.yml of one node.

    Without ``seed_hosts`` the node is a single-node cluster; with them it finds the other
    nodes at those transport addresses, and ``initial_masters`` (only for a cluster that
    has never formed) names the nodes that may elect the first master.
    """
    settings: dict[str, str | list[str]] = {
        "cluster.name": layout.cluster_name,
        "node.name": node_name,
        "network.host": bind_host,
        "http.port": str(http_port),
        "transport.port": str(transport_port),
    }
    if seed_hosts is None:
        settings["discovery.type"] = "single-node"
    else:
        settings["discovery.seed_hosts"] = seed_hosts
        if initial_masters:
            settings["cluster.initial_master_nodes"] = initial_masters
    settings.update(security)
    settings.update(
        {
            "xpack.ml.enabled": "false",
            # Small disks on dev machines would otherwise flip indices to read-only.
            "cluster.routing.allocation.disk.threshold_enabled": "false",
            # Tests and retention delete indices by pattern.
            "action.destructive_requires_name": "false",
            "path.data": str(layout.data),
            "path.logs": str(layout.logs),
            "path.repo": str(layout.repo),
        }
    )
    return settings


def ensure_service_user() -> pwd.struct_passwd:
    """The unprivileged account the node runs as under root; created when missing."""
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    nologin = "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false"
    cmd = [useradd, "--system", "--no-create-home", "--shell", nologin, SERVICE_USER]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 and proc.returncode != 9:  # 9: created concurrently
        raise LocalEsError(
            f"Elasticsearch refuses to run as root and creating the system user "
            f"{SERVICE_USER!r} failed: {proc.stderr.strip()}; create it or run as a normal user"
        )
    return pwd.getpwnam(SERVICE_USER)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def _blocked_ancestor(path: Path, user: pwd.struct_passwd) -> Path | None:
    """First ancestor the service user cannot traverse (mode bits only, no ACLs)."""
    for parent in [*reversed(path.parents), path]:
        st = parent.stat()
        if st.st_uid == user.pw_uid:
            ok = bool(st.st_mode & 0o100)
        elif st.st_gid == user.pw_gid:
            ok = bool(st.st_mode & 0o010)
        else:
            ok = bool(st.st_mode & 0o001)
        if not ok:
            return parent
    return None


def prepare_node_dir(layout: NodeLayout, es_home: Path) -> None:
    """Create the node directory and refresh its config from the distribution.

    Config is refreshed on every start so a changed port, heap or mode takes effect; the
    keystore Elasticsearch (or the secured mode) created there is kept.
    """
    for path in (layout.root, layout.data, layout.logs, layout.repo):
        path.mkdir(parents=True, exist_ok=True)
    layout.config.mkdir(exist_ok=True)
    for src in (es_home / "config").iterdir():
        dst = layout.config / src.name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        elif src.name != "elasticsearch.yml":
            shutil.copy2(src, dst)
    layout.console_log.touch()


def write_node_config(layout: NodeLayout, settings: Mapping[str, str | list[str]]) -> None:
    """Write ``elasticsearch.yml``."""
    yml = "".join(f"{key}: {_yaml_value(value)}\n" for key, value in settings.items())
    (layout.config / "elasticsearch.yml").write_text(
        "# Written by otel-audit local-es on every start; edits are overwritten.\n" + yml
    )


def hand_over(root: Path, es_home: Path, user: pwd.struct_passwd | None) -> None:
    """Give the service account (under root) the node directory; check it can reach it."""
    if user is None:
        return
    _chown_tree(root, user.pw_uid, user.pw_gid)
    for path in (es_home, root):
        blocked = _blocked_ancestor(path, user)
        if blocked is not None:
            raise LocalEsError(
                f"the {SERVICE_USER!r} account cannot reach {path} because {blocked} is "
                "not traversable for it; use a directory outside private homes "
                "(OTEL_AUDIT_CACHE_DIR / OTEL_AUDIT_LOCAL_ES_DATA)"
            )


def _yaml_value(value: str | list[str]) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return _yaml_scalar(value)


def _yaml_scalar(value: str) -> str:
    if value in ("true", "false") or value.isdigit():
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def launch(
    heap: str,
    es_home: Path,
    java: JavaRuntime,
    layout: NodeLayout,
    user: pwd.struct_passwd | None,
) -> subprocess.Popen[bytes]:
    """Start ``bin/elasticsearch -d``; the returned launcher exits once the node runs."""
    layout.pid_file.unlink(missing_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(layout.root),
        "ES_JAVA_HOME": str(java.home),
        "ES_PATH_CONF": str(layout.config),
        "ES_JAVA_OPTS": f"-Xms{heap} -Xmx{heap}",
    }
    cmd = [str(es_home / "bin" / "elasticsearch"), "-d", "-p", str(layout.pid_file)]
    with layout.console_log.open("ab") as console:
        if user is None:
            return subprocess.Popen(
                cmd, cwd=layout.root, env=env, stdout=console, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        return subprocess.Popen(
            cmd, cwd=layout.root, env=env, stdout=console, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
            user=user.pw_uid, group=user.pw_gid, extra_groups=[],
        )  # fmt: skip


def read_pid(layout: NodeLayout) -> int | None:
    """The pid Elasticsearch wrote, if any."""
    try:
        return int(layout.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def es_process_alive(pid: int, node_root: Path, *, require_cwd: bool = False) -> bool:
    """True when ``pid`` is a live Elasticsearch server of this node directory.

    Guards against pid reuse: the command line must run the Elasticsearch main class
    and the process must run inside the node directory.
    """
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in ("Z", "X"):
        return False
    if not any(_ES_MAIN.encode() in arg for arg in cmdline):
        return False
    try:
        cwd = Path(os.readlink(proc / "cwd"))
    except OSError:
        # Another user's process: trust the pid file's word unless scanning blindly.
        return not require_cwd
    # The launcher moves the server into path.logs, which lives in the node directory.
    root = node_root.resolve()
    return cwd == root or root in cwd.parents


def find_node_pids(node_root: Path) -> list[int]:
    """Live Elasticsearch servers of this node directory, found without the pid file."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and es_process_alive(int(entry.name), node_root, require_cwd=True):
            pids.append(int(entry.name))
    return pids


def terminate(pid: int, node_root: Path, timeout_s: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout_s``; True when SIGKILL was needed."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not es_process_alive(pid, node_root):
            return False
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 10
    while es_process_alive(pid, node_root) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def terminate_all(pids: Mapping[int, Path], timeout_s: float) -> list[int]:
    """SIGTERM every node at once (pid -> node directory), SIGKILL the ones still alive
    after ``timeout_s``; returns the pids that needed SIGKILL.

    All at once because stopping the nodes of a cluster one by one makes the survivors
    elect, reallocate and wait for each departed node in turn.
    """
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    alive = dict(pids)
    while alive and time.monotonic() < deadline:
        alive = {pid: root for pid, root in alive.items() if es_process_alive(pid, root)}
        if alive:
            time.sleep(0.2)
    killed = []
    for pid, root in alive.items():
        if terminate(pid, root, 0.0):
            killed.append(pid)
    return killed


def wait_port_free(host: str, port: int, timeout_s: float) -> None:
    """Wait until nothing accepts connections on the port."""
    deadline = time.monotonic() + timeout_s
    while port_accepts(host, port, timeout_s=0.5):
        if time.monotonic() > deadline:
            raise PortInUseError(port, "still accepting connections after the node stopped")
        time.sleep(0.2)


def log_tail(layout: NodeLayout, lines: int = 40) -> str:
    """Last lines of the server log and the console log, for error messages."""
    parts = []
    for path in (layout.server_log, layout.console_log):
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        if text:
            parts.append(f"[{path}]\n" + "\n".join(text[-lines:]))
    return "\n".join(parts)
