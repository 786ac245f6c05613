"""The drills: each runs a steady load through a fresh :class:`Stack`, injects its faults,
and returns one :class:`DrillRow` (sent, acknowledged, stored, lost, duplicated, recovery,
verify over every chain).

Sizes come from :class:`DrillSizes`: ``make drill`` uses the full ones, the short test in
``make test`` small ones.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from elasticsearch import Elasticsearch

from indexer.local_es import LocalElasticsearch
from indexer.local_es.state import wipe_project_state
from tests.drill.harness import DrillRow, LoadGenerator, Stack, finish
from tests.drill.proxy import Fault, FaultProxy

__all__ = ["ALL_DRILLS", "DrillContext", "DrillSizes"]


@dataclass
class DrillSizes:
    """How long and how hard each drill runs."""

    rate_per_s: float = 500.0
    receiver_kills: int = 20
    collector_kills: int = 2
    kill_gap_s: tuple[float, float] = (1.0, 5.0)
    node_down_s: float = 20.0
    cluster_down_s: float = 60.0
    spool_down_s: float = 30.0
    spool_limit_bytes: int = 256 * 1024
    proxy_phase_s: float = 30.0
    soak_s: float = 1800.0
    soak_rate_per_s: float = 500.0
    settle_s: float = 5.0


@dataclass
class DrillContext:
    """What every drill shares: the cluster, a client of it, the Collector build, a root."""

    cluster: LocalElasticsearch
    es: Elasticsearch
    collector_binary: Path
    work_root: Path
    sizes: DrillSizes
    seed: int = 18

    @property
    def es_url(self) -> str:
        """Every node's URL, comma-separated (the receivers fail over between them)."""
        return ",".join(self.cluster.urls)

    def upstreams(self) -> list[tuple[str, int]]:
        """(host, port) of every node, for the fault proxy."""
        out = []
        for url in self.cluster.urls:
            host, port = url.split("://", 1)[1].rsplit(":", 1)
            out.append((host, int(port)))
        return out


@contextlib.contextmanager
def running_stack(
    ctx: DrillContext, name: str, es_url: str | None = None, **kwargs: object
) -> Iterator[Stack]:
    """A fresh stack on a wiped cluster (so each drill's counts and chains are its own)."""
    wipe_project_state(ctx.es)
    work = ctx.work_root / name
    shutil.rmtree(work, ignore_errors=True)
    stack = Stack(work, es_url or ctx.es_url, ctx.collector_binary, **kwargs)  # type: ignore[arg-type]
    try:
        stack.start()
        yield stack
    finally:
        stack.close()


def _load(ctx: DrillContext, stack: Stack, rate: float | None = None) -> LoadGenerator:
    return LoadGenerator(stack.collector.otlp_grpc_endpoint, rate or ctx.sizes.rate_per_s).start()


def kill_processes(ctx: DrillContext, stack: Stack, kills: int, collector_kills: int) -> str:
    """``kills`` SIGKILLs of a random receiver at random moments, restarting each; every
    ``kills // collector_kills``-th kill also SIGKILLs the Collector and restarts it on
    its queue. Returns a note of what was killed."""
    rnd = random.Random(ctx.seed)
    every = max(1, kills // max(1, collector_kills)) if collector_kills else 0
    killed_collector = 0
    low, high = ctx.sizes.kill_gap_s
    for n in range(1, kills + 1):
        time.sleep(rnd.uniform(low, high))
        receiver = rnd.choice(stack.receivers)
        receiver.kill()
        time.sleep(rnd.uniform(0.0, 1.0))
        receiver.start(timeout_s=120)
        if every and n % every == 0 and killed_collector < collector_kills:
            time.sleep(rnd.uniform(0.2, 1.5))
            stack.collector.kill()
            time.sleep(rnd.uniform(0.0, 1.0))
            stack.collector.start(timeout_s=60)
            killed_collector += 1
    return f"{kills} receiver SIGKILLs, {killed_collector} Collector SIGKILLs"


def drill_kills(ctx: DrillContext) -> DrillRow:
    """Receivers (and the Collector) SIGKILLed at random moments under load."""
    s = ctx.sizes
    with running_stack(ctx, "kills") as stack:
        load = _load(ctx, stack)
        note = kill_processes(ctx, stack, s.receiver_kills, s.collector_kills)
        ended = time.monotonic()
        time.sleep(s.settle_s)
        return finish(
            f"SIGKILL x{s.receiver_kills} (+Collector x{s.collector_kills})",
            stack,
            load,
            ctx.es,
            ctx.es_url,
            ended,
            notes=f"{note}; load retries {load.failures}",
        )


def drill_node_then_cluster(ctx: DrillContext) -> DrillRow:
    """One node SIGKILLed mid-stream and brought back; then every node down for a while."""
    s = ctx.sizes
    rnd = random.Random(ctx.seed)
    with running_stack(ctx, "es-nodes") as stack:
        load = _load(ctx, stack)
        time.sleep(s.settle_s)
        victim = rnd.randrange(len(ctx.cluster.urls))
        ctx.cluster.kill_node(victim)
        time.sleep(s.node_down_s)
        ctx.cluster.ensure_started()
        time.sleep(s.settle_s)
        for index in range(len(ctx.cluster.urls)):
            ctx.cluster.kill_node(index)
        time.sleep(s.cluster_down_s)
        ctx.cluster.ensure_started()
        ended = time.monotonic()
        time.sleep(s.settle_s)
        return finish(
            f"ES node kill, cluster down {s.cluster_down_s:.0f}s",
            stack,
            load,
            ctx.es,
            ctx.es_url,
            ended,
            drain_timeout_s=600,
            notes=f"node {victim} down {s.node_down_s:.0f}s; load retries {load.failures}",
        )


def _spool_depth(stack: Stack) -> int:
    """Bytes in every receiver's spool directory now."""
    total = 0
    for receiver in stack.receivers:
        for path in (receiver.work_dir / "spool").rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file():
                    total += path.stat().st_size
    return total


def _es_away(
    ctx: DrillContext, stack: Stack, proxy: FaultProxy, seconds: float
) -> tuple[float, int]:
    """Elasticsearch unreachable through the proxy for ``seconds``; (end, peak spool bytes)."""
    proxy.set_fault(Fault(refuse=True))
    peak = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, _spool_depth(stack))
        time.sleep(0.5)
    proxy.set_fault(Fault())
    return time.monotonic(), peak


def drill_spool_limit(ctx: DrillContext) -> DrillRow:
    """ES away until the spool hits its size limit: receivers answer UNAVAILABLE and the
    Collector's queue holds the rest."""
    s = ctx.sizes
    proxy = FaultProxy(ctx.upstreams())
    env = {"OTEL_AUDIT_SPOOL_MAX_BYTES": str(s.spool_limit_bytes)}
    try:
        with running_stack(ctx, "spool-limit", es_url=proxy.url, receiver_env=env) as stack:
            load = _load(ctx, stack)
            time.sleep(s.settle_s)
            ended, peak = _es_away(ctx, stack, proxy, s.spool_down_s)
            time.sleep(s.settle_s)
            return finish(
                f"spool full (limit {s.spool_limit_bytes // 1024} KiB)",
                stack,
                load,
                ctx.es,
                ctx.es_url,
                ended,
                notes=(
                    f"ES away {s.spool_down_s:.0f}s; spool peak {peak} B (all receivers); "
                    f"load retries {load.failures}"
                ),
            )
    finally:
        proxy.close()


@contextlib.contextmanager
def small_filesystems(paths: list[Path], size: str) -> Iterator[None]:
    """A tmpfs of ``size`` mounted on each path (root only), unmounted afterwards."""
    mounted = []
    try:
        for path in paths:
            path.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                check=True,
                capture_output=True,
            )
            mounted.append(path)
        yield
    finally:
        for path in mounted:
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def can_mount() -> bool:
    """True when this process may mount a tmpfs (root)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


def drill_disk_full(ctx: DrillContext) -> DrillRow:
    """ES away while each spool sits on a 1 MiB filesystem: the disk really fills."""
    s = ctx.sizes
    proxy = FaultProxy(ctx.upstreams())
    name = "disk-full"
    work = ctx.work_root / name
    shutil.rmtree(work, ignore_errors=True)
    spools = [work / f"receiver-{i}" / "spool" for i in range(2)]
    try:
        with small_filesystems(spools, "1m"), running_stack(ctx, name, es_url=proxy.url) as stack:
            load = _load(ctx, stack)
            time.sleep(s.settle_s)
            ended, peak = _es_away(ctx, stack, proxy, s.spool_down_s)
            time.sleep(s.settle_s)
            return finish(
                "spool disk full (1 MiB tmpfs)",
                stack,
                load,
                ctx.es,
                ctx.es_url,
                ended,
                notes=(
                    f"ES away {s.spool_down_s:.0f}s; spool peak {peak} B (all receivers); "
                    f"load retries {load.failures}"
                ),
            )
    finally:
        proxy.close()


def proxy_phase(proxy: FaultProxy, kind: str, seconds: float) -> str:
    """Run one proxy fault for ``seconds``; a note of what it did."""
    before = (proxy.stats.refused, proxy.stats.truncated)
    end = time.monotonic() + seconds
    if kind == "slow":
        proxy.set_fault(Fault(latency_s=0.5))
        time.sleep(seconds)
    elif kind == "flap":
        up = False
        while time.monotonic() < end:
            proxy.set_fault(Fault() if up else Fault(refuse=True))
            up = not up
            time.sleep(2.0)
    elif kind == "half":
        proxy.set_fault(Fault(truncate_p=0.2))
        time.sleep(seconds)
    else:
        raise ValueError(f"unknown proxy fault {kind!r}")
    proxy.set_fault(Fault())
    refused = proxy.stats.refused - before[0]
    truncated = proxy.stats.truncated - before[1]
    return f"{refused} connections refused, {truncated} responses cut"


_PROXY_NAMES = {
    "slow": "ES slow (+500 ms per response)",
    "flap": "ES flapping (2 s up / 2 s down)",
    "half": "ES half-written responses (20 %)",
}


def drill_proxy(ctx: DrillContext, kind: str) -> DrillRow:
    """A slow, flapping or half-answering Elasticsearch behind the fault proxy."""
    s = ctx.sizes
    proxy = FaultProxy(ctx.upstreams(), seed=ctx.seed)
    try:
        with running_stack(ctx, f"proxy-{kind}", es_url=proxy.url) as stack:
            load = _load(ctx, stack)
            time.sleep(s.settle_s)
            note = proxy_phase(proxy, kind, s.proxy_phase_s)
            ended = time.monotonic()
            time.sleep(s.settle_s)
            return finish(
                _PROXY_NAMES[kind],
                stack,
                load,
                ctx.es,
                ctx.es_url,
                ended,
                notes=f"{s.proxy_phase_s:.0f}s: {note}; load retries {load.failures}",
            )
    finally:
        proxy.close()


def _rss_and_fds(pid: int) -> tuple[int, int]:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    return cov / var * 60.0


def drill_soak(ctx: DrillContext) -> DrillRow:
    """Steady load for ``soak_s``; RSS and open descriptors of each receiver sampled, their
    slope over the second half reported (the first half is warm-up)."""
    s = ctx.sizes
    with running_stack(ctx, "soak") as stack:
        load = _load(ctx, stack, s.soak_rate_per_s)
        started = time.monotonic()
        samples: dict[str, list[tuple[float, int, int]]] = {}
        interval = max(1.0, min(10.0, s.soak_s / 60))
        while time.monotonic() - started < s.soak_s:
            time.sleep(interval)
            for name, pid in stack.processes().items():
                with contextlib.suppress(OSError):
                    rss, fds = _rss_and_fds(pid)
                    samples.setdefault(name, []).append((time.monotonic() - started, rss, fds))
        ended = time.monotonic()
        parts = []
        for name, rows in sorted(samples.items()):
            tail = rows[len(rows) // 2 :]
            rss_slope = slope_per_min([(t, r / 1024) for t, r, _ in tail])
            fd_slope = slope_per_min([(t, f) for t, _, f in tail])
            parts.append(
                f"{name}: RSS {rows[0][1] >> 20}->{rows[-1][1] >> 20} MiB "
                f"({rss_slope:+.0f} KiB/min), fds {rows[0][2]}->{rows[-1][2]} "
                f"({fd_slope:+.2f}/min)"
            )
        return finish(
            f"soak {s.soak_s / 60:.0f} min at {s.soak_rate_per_s:.0f}/s",
            stack,
            load,
            ctx.es,
            ctx.es_url,
            ended,
            notes="; ".join(parts),
        )


def drill_short(ctx: DrillContext) -> DrillRow:
    """The short drill of ``make test``: a few SIGKILLs and one proxy fault, small load."""
    s = ctx.sizes
    proxy = FaultProxy(ctx.upstreams(), seed=ctx.seed)
    try:
        with running_stack(ctx, "short", es_url=proxy.url) as stack:
            load = _load(ctx, stack)
            note = kill_processes(ctx, stack, s.receiver_kills, s.collector_kills)
            note += "; half-written: " + proxy_phase(proxy, "half", s.proxy_phase_s)
            ended = time.monotonic()
            time.sleep(s.settle_s)
            return finish(
                "short: SIGKILLs + half-written",
                stack,
                load,
                ctx.es,
                ctx.es_url,
                ended,
                notes=f"{note}; load retries {load.failures}",
            )
    finally:
        proxy.close()


ALL_DRILLS = {
    "kills": drill_kills,
    "es-nodes": drill_node_then_cluster,
    "spool-limit": drill_spool_limit,
    "disk-full": drill_disk_full,
    "slow": lambda ctx: drill_proxy(ctx, "slow"),
    "flap": lambda ctx: drill_proxy(ctx, "flap"),
    "half": lambda ctx: drill_proxy(ctx, "half"),
    "soak": drill_soak,
}
