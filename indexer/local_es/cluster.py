"""The shape of a local cluster: its nodes' names, ports and directories.

One node keeps its files directly in the node directory (as it always has); a cluster of
several keeps one directory per node side by side, and the shape in ``cluster.json``, so
``stop`` and ``status`` find every node without being told how many there are::

    <dir>/cluster.json       nodes, ports, cluster name, secured or not
    <dir>/security/          CA, node certificate, passwords (secured mode)
    <dir>/node-0/ node-1/ …  one node directory each (several nodes)

Node ``i`` listens for HTTP on the URL's port + ``i``; its transport port is that + 100
when free (recorded, so a restarted node comes back where the others look for it).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.local_es.config import LocalEsConfig
from indexer.local_es.errors import LocalEsConfigError
from indexer.local_es.node import CLUSTER_NAME, NodeLayout, bindable, pick_transport_port

__all__ = ["MANIFEST_NAME", "ClusterPlan", "Member", "plan_cluster", "read_manifest"]

MANIFEST_NAME = "cluster.json"


@dataclass(frozen=True)
class Member:
    """One node of the cluster."""

    index: int
    name: str
    http_port: int
    transport_port: int
    layout: NodeLayout


@dataclass(frozen=True)
class ClusterPlan:
    """Every node of the local cluster at one URL, and how they find each other."""

    root: Path
    cluster_name: str
    bind_host: str
    secure: bool
    members: tuple[Member, ...]

    @property
    def size(self) -> int:
        """Number of nodes."""
        return len(self.members)

    def seed_hosts(self) -> list[str] | None:
        """Transport addresses every node looks for the others at (None: single node)."""
        if self.size == 1:
            return None
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return [f"{host}:{m.transport_port}" for m in self.members]

    def initial_masters(self) -> list[str] | None:
        """Node names for the first election; None once any node holds cluster state,
        because bootstrapping a formed cluster again could split it."""
        if self.size == 1 or any(m.layout.has_cluster_state() for m in self.members):
            return None
        return [m.name for m in self.members]

    def with_free_ports(self, indices: Collection[int]) -> ClusterPlan:
        """The plan with the nodes ``indices`` (about to start) moved to a free transport
        port when theirs is taken; the others keep theirs (they may be running)."""
        taken = {m.transport_port for m in self.members if m.index not in indices}
        members = []
        for m in self.members:
            port = m.transport_port
            if m.index in indices:
                if port in taken or not bindable(self.bind_host, port):
                    port = pick_transport_port(m.http_port, self.bind_host, taken)
                taken.add(port)
            members.append(dataclasses.replace(m, transport_port=port))
        return dataclasses.replace(self, members=tuple(members))

    def manifest(self) -> dict[str, Any]:
        """What ``cluster.json`` records."""
        return {
            "nodes": self.size,
            "cluster_name": self.cluster_name,
            "secure": self.secure,
            "http_ports": [m.http_port for m in self.members],
            "transport_ports": [m.transport_port for m in self.members],
        }

    def write_manifest(self) -> None:
        """Record the shape (atomically) for later ``stop``, ``status`` and restarts."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / MANIFEST_NAME
        tmp = path.with_name(f".{MANIFEST_NAME}.tmp")
        tmp.write_text(json.dumps(self.manifest(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The recorded shape of the cluster in ``root``, if any."""
    try:
        loaded = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise LocalEsConfigError(f"{root / MANIFEST_NAME} is not valid JSON: {exc}") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("nodes"), int):
        raise LocalEsConfigError(f"{root / MANIFEST_NAME} does not describe a cluster")
    return loaded


def _recorded_size(root: Path, manifest: dict[str, Any] | None) -> int | None:
    if manifest is not None:
        return int(manifest["nodes"])
    # A node directory from before cluster.json: one node, files at the top.
    if (root / "data").is_dir() or (root / "config").is_dir():
        return 1
    return None


def plan_cluster(config: LocalEsConfig) -> ClusterPlan:
    """The cluster at ``config``'s URL: as recorded in its directory, or as configured.

    Transport ports are the recorded ones (http port + 100 for a node never started);
    :meth:`ClusterPlan.with_free_ports` moves the nodes about to start off taken ones.
    """
    root = config.node_dir
    manifest = read_manifest(root)
    recorded = _recorded_size(root, manifest)
    size = config.nodes or recorded or 1
    if recorded is not None and size != recorded:
        raise LocalEsConfigError(
            f"{root} holds a {recorded}-node cluster, not {size} nodes; give --nodes "
            f"{recorded}, or another --data-dir for a cluster of {size}"
        )
    if size == 1:
        cluster_name = CLUSTER_NAME
    else:
        recorded_name = (manifest or {}).get("cluster_name")
        cluster_name = str(recorded_name or f"{CLUSTER_NAME}-{config.http_port}")
    old_ports: list[int] = list((manifest or {}).get("transport_ports") or [])
    members = []
    for index in range(size):
        http_port = config.http_port + index
        transport = old_ports[index] if index < len(old_ports) else http_port + 100
        node_root = root if size == 1 else root / f"node-{index}"
        members.append(
            Member(
                index=index,
                name=f"otel-audit-{http_port}",
                http_port=http_port,
                transport_port=transport,
                layout=NodeLayout(node_root, cluster_name),
            )
        )
    return ClusterPlan(
        root=root,
        cluster_name=cluster_name,
        bind_host=config.bind_host,
        secure=config.secure,
        members=tuple(members),
    )
