"""A node or cluster in a directory of its own, removed afterwards: for tests, drills and
benchmarks.

    with scratch_cluster(prefix="otel-audit-drill-es-") as cluster:
        Elasticsearch(cluster.urls)

``scratch_cluster`` runs the three-node cluster on OTEL_AUDIT_ES_CLUSTER_URL when set (a
healthy one already there is reused and left running), otherwise on consecutive free ports
below the ephemeral range, so a node killed and started again is not beaten to its port by
an outgoing connection.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from indexer.local_es.manager import LocalElasticsearch
from indexer.local_es.node import FREE_PORTS, bindable

__all__ = [
    "CLUSTER_HEAP",
    "CLUSTER_NODES",
    "CLUSTER_URL_ENV",
    "free_port_run",
    "scratch_cluster",
    "scratch_node",
]

CLUSTER_URL_ENV = "OTEL_AUDIT_ES_CLUSTER_URL"
CLUSTER_NODES = 3
# Three JVMs share a small machine with whatever they serve: small heaps.
CLUSTER_HEAP = "384m"
_TRANSPORT_OFFSET = 100


def free_port_run(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive ports free on ``host`` now (each with its
    transport port, + 100, free too), below the ephemeral range."""
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    rng = random.Random()
    last = FREE_PORTS.stop - count
    for _ in range(1000):
        first = rng.randrange(FREE_PORTS.start, last)
        if all(
            bindable(host, first + i) and bindable(host, first + i + _TRANSPORT_OFFSET)
            for i in range(count)
        ):
            return first
    raise OSError(
        f"no {count} consecutive free ports in {FREE_PORTS.start}-{FREE_PORTS.stop - 1} on {host}"
    )


@contextlib.contextmanager
def scratch_node(url: str, prefix: str, **kwargs: object) -> Iterator[LocalElasticsearch]:
    """A node or cluster at ``url`` in a fresh directory named ``prefix...``; stopped and
    the directory removed at the end when this started it (a healthy one already at the
    URL is reused and left running). ``kwargs`` go to :class:`LocalElasticsearch`."""
    # Not in a directory private to the invoking user: under root the nodes run as an
    # unprivileged account that must reach it.
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    node = LocalElasticsearch(url=url, data_dir=data_dir, **kwargs)  # type: ignore[arg-type]
    try:
        started = node.ensure_started()
        try:
            yield node
        finally:
            if started:
                node.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def scratch_cluster(
    prefix: str = "otel-audit-cluster-",
    *,
    nodes: int = CLUSTER_NODES,
    heap: str | None = None,
    url: str | None = None,
) -> Iterator[LocalElasticsearch]:
    """A running cluster of ``nodes`` nodes (see the module's doc for where).

    ``heap`` defaults to OTEL_AUDIT_CLUSTER_HEAP, else 384m per node; ``url`` to
    OTEL_AUDIT_ES_CLUSTER_URL, else consecutive free ports on 127.0.0.1.
    """
    url = url or os.environ.get(CLUSTER_URL_ENV) or f"http://127.0.0.1:{free_port_run(nodes)}"
    heap = heap or os.environ.get("OTEL_AUDIT_CLUSTER_HEAP") or CLUSTER_HEAP
    with scratch_node(url, prefix, nodes=nodes, heap=heap) as cluster:
        yield cluster
