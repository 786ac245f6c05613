"""Ingest on a three-node Elasticsearch cluster with one and with two receivers, sealing on,
against the raw ``_bulk`` ceiling of the same cluster measured in the same run.

Phases, on fresh indices each (same pre-encoded OTLP requests, fixed ids), in this order:

1. one receiver: ``otel-audit serve`` (ingest + seal) given every node's URL, fed over gRPC;
2. two receivers: two such processes (own spool, state and chain), each fed half the
   requests at the same time;
3. ceiling: the documents the receiver would store, pre-serialized, sent straight to
   ``_bulk`` over every node (the official client round-robins), the receiver's bulk size
   and number of concurrent bulks. It runs last: on a just-started cluster Elasticsearch
   spent twice the CPU per event, which made the ceiling read low.

For each: events/s, the ratio to the ceiling, each receiver's CPU per event (its process
CPU time over the phase's window / the events it took), Elasticsearch's CPU per event and
the cores each party used (ES share of the machine is the bottleneck evidence on a small
machine).

Fixed costs are measured, not assumed: before its load each receiver sits idle for
``--idle-s`` (after its warm-up) and its CPU per second then is reported; CPU per event is
also given net of that idle rate over the window. Each receiver's counters over the
window (bulk requests, records spooled, blocks sealed, sealing errors, from its
``/metrics``) show work that grows when Elasticsearch is slow (retries, the spool, more
and smaller blocks).

    python -m bench.cluster_bench [--events 60000] [--records 500] [--concurrency 8]
        [--idle-s 10] [--quick] [--json]

A cluster of the local distribution (3 nodes, heap OTEL_AUDIT_CLUSTER_HEAP, default 384m)
is started in a scratch directory and stopped at the end; OTEL_AUDIT_ES_CLUSTER_URL uses a
running one (every ``audit-*`` index on it is deleted: give it one of its own).

Targets: two receivers >= 80 % of the ceiling with sealing on; each receiver's CPU per
event with two running within 10 % of one receiver's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from bench.figures import kv_table
from bench.ingest_bench import (
    _count_events,
    _ingest_settings,
    _machine_busy_s,
    _reset_indices,
    _self_cpu_s,
    _send_bulks,
    _stored_bodies,
)
from bench.otlp_load import Receiver, build_requests, free_port, proc_stat, replay, run_receiver

__all__ = ["CEILING_TARGET", "CPU_SPREAD_TARGET", "main", "run"]

CEILING_TARGET = 0.80
CPU_SPREAD_TARGET = 0.10
"""Each of two receivers' CPU per event may exceed one receiver's by at most this share."""
_WARMUP_REQUESTS = 4
_SETTLE_S = 2.0
"""After the warm-up, before the idle window: its events get sealed (one block interval)."""
# Receiver counters read from /metrics around each phase: what grows with a slow cluster.
_COUNTERS = {
    "bulk_requests": "otel_audit_receiver_bulk_duration_seconds_count",
    "records_spooled": "otel_audit_receiver_records_spooled_total",
    "blocks_sealed": "otel_audit_receiver_sealer_blocks_total",
    "sealing_errors": "otel_audit_receiver_sealer_errors_total",
}


def _progress(message: str) -> None:
    print(f"cluster-bench: {message}", file=sys.stderr, flush=True)


class _Meter:
    """CPU seconds of the cluster's nodes, each receiver, this process and the machine."""

    def __init__(self, es_pids: list[int], receivers: list[Receiver]) -> None:
        self.es_pids = es_pids
        self.receivers = receivers
        self.start: list[float] = []
        self.delta: list[float] = []

    def _sample(self) -> list[float]:
        es = sum(proc_stat(pid)[0] for pid in self.es_pids)
        rcv = [r.stat()[0] for r in self.receivers]
        return [time.perf_counter(), es, _self_cpu_s(), _machine_busy_s(), *rcv]

    @contextmanager
    def measure(self) -> Iterator[_Meter]:
        self.start = self._sample()
        yield self
        self.delta = [b - a for a, b in zip(self.start, self._sample(), strict=True)]

    def figures(self, events: int, per_receiver_events: list[int]) -> dict[str, Any]:
        wall, es, client, machine, *rcv = self.delta
        cores = os.cpu_count() or 1
        out: dict[str, Any] = {
            "events_per_s": round(events / wall),
            "wall_s": round(wall, 2),
            "es_cpu_us_per_event": round(es / events * 1e6, 1),
            "es_cores": round(es / wall, 2),
            "es_share_of_machine_busy": round(es / machine, 2) if machine else 0.0,
            "receivers_cores": round(sum(rcv) / wall, 2),
            "client_cores": round(client / wall, 2),
            "machine_busy_share": round(machine / wall / cores, 2),
        }
        out["receiver_cpu_us_per_event"] = [
            round(cpu / n * 1e6, 1) if n else None
            for cpu, n in zip(rcv, per_receiver_events, strict=True)
        ]
        return out

    def net_of_idle(
        self, per_receiver_events: list[int], idle_cpu_per_s: list[float]
    ) -> list[float | None]:
        """Each receiver's CPU per event (us) less its idle rate over the window."""
        wall, rcv = self.delta[0], self.delta[4:]
        return [
            round(max(0.0, cpu - idle * wall) / n * 1e6, 1) if n else None
            for cpu, n, idle in zip(rcv, per_receiver_events, idle_cpu_per_s, strict=True)
        ]

    def idle_share(self, idle_cpu_per_s: list[float]) -> list[float]:
        """The share of each receiver's CPU over the window its idle rate accounts for:
        small when the phase has enough events for fixed costs not to dominate."""
        wall, rcv = self.delta[0], self.delta[4:]
        return [
            round(min(1.0, idle * wall / cpu), 3) if cpu > 0 else 0.0
            for cpu, idle in zip(rcv, idle_cpu_per_s, strict=True)
        ]


def _counters(http_port: int) -> dict[str, float]:
    """The receiver's counters named in ``_COUNTERS`` (0 for one not exported yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return {key: values.get(name, 0.0) for key, name in _COUNTERS.items()}


def _idle_cpu_per_s(receivers: list[Receiver], idle_s: float) -> list[float]:
    """Each receiver's CPU seconds per second over ``idle_s`` without traffic."""
    if idle_s <= 0:
        return [0.0] * len(receivers)
    time.sleep(_SETTLE_S)
    before = [r.stat()[0] for r in receivers]
    t0 = time.perf_counter()
    time.sleep(idle_s)
    wall = time.perf_counter() - t0
    return [(r.stat()[0] - b) / wall for r, b in zip(receivers, before, strict=True)]


@contextmanager
def _cluster() -> Iterator[tuple[Any, list[int]]]:
    """(node URLs, node pids) of a running three-node cluster; the clients take the list."""
    from indexer.local_es.scratch import scratch_cluster

    with scratch_cluster("otel-audit-cluster-bench-") as cluster:
        pids = [cluster.node_pid(i) for i in range(len(cluster.urls))]
        yield cluster.urls, [p for p in pids if p is not None]


def _ceiling(
    urls: Any, es_pids: list[int], bodies: list[bytes], warmup: list[bytes], settings: Any
) -> dict[str, Any]:
    max_docs, max_bytes = settings["bulk_max_docs"], settings["bulk_max_bytes"]
    concurrency = settings["max_inflight_bulks"]
    warm_bulks, warm_events = _stored_bodies(warmup, max_docs, max_bytes)
    bulks, events = _stored_bodies(bodies, max_docs, max_bytes)
    asyncio.run(_reset_indices(urls))
    asyncio.run(_send_bulks(urls, warm_bulks, concurrency))
    _progress(f"ceiling: {events} events in {len(bulks)} _bulk requests, {concurrency} at once")
    meter = _Meter(es_pids, [])
    with meter.measure():
        _, failed = asyncio.run(_send_bulks(urls, bulks, concurrency))
    stored = asyncio.run(_count_events(urls)) - warm_events
    return {
        "phase": "raw _bulk ceiling",
        "events": events,
        **meter.figures(events, []),
        "failed_items": failed,
        "stored_events": stored,
    }


def _wait_stored(urls: Any, want: int, timeout_s: float = 600.0) -> int:
    """Poll the event count until it reaches ``want`` (or ``timeout_s``); the last count."""
    deadline = time.monotonic() + timeout_s
    while True:
        count = asyncio.run(_count_events(urls))
        if count >= want or time.monotonic() > deadline:
            return count
        time.sleep(0.25)


def _receiver_config(urls: list[str], http_port: int) -> dict[str, Any]:
    return {
        "consumer": "ingest",
        "es_url": ",".join(urls),
        "http_endpoint": f"127.0.0.1:{http_port}",
        "spool_dir": "spool",
        "integrity": {"enabled": True, "state_dir": "integrity"},
    }


def _receivers_phase(
    urls: Any,
    es_pids: list[int],
    bodies: list[bytes],
    warmup: list[bytes],
    records: int,
    concurrency: int,
    count: int,
    idle_s: float,
) -> dict[str, Any]:
    asyncio.run(_reset_indices(urls))
    env: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith("OTEL_AUDIT_INTEGRITY__")
    }
    shares = [bodies[i::count] for i in range(count)]
    http_ports = [free_port() for _ in range(count)]
    with ExitStack() as stack:
        receivers = [
            stack.enter_context(run_receiver(_receiver_config(urls, port), env=env))
            for port in http_ports
        ]
        for receiver in receivers:
            replay(receiver.target, warmup, concurrency)
        name = f"{count} receiver{'s' if count > 1 else ''} (ingest + seal)"
        idle = _idle_cpu_per_s(receivers, idle_s)
        _progress(f"{name}: idle CPU {', '.join(f'{v * 1e3:.2f}' for v in idle)} ms/s")
        warm_stored = asyncio.run(_count_events(urls))
        _progress(f"{name}: {len(bodies) * records} events, {concurrency} calls per receiver")
        errors: list[BaseException] = []
        retried: list[int] = []

        def feed(receiver: Receiver, share: list[bytes]) -> None:
            try:
                retried.append(replay(receiver.target, share, concurrency).retries)
            except BaseException as exc:  # reported after the phase
                errors.append(exc)

        counters_before = [_counters(port) for port in http_ports]
        meter = _Meter(es_pids, receivers)
        with meter.measure():
            threads = [
                threading.Thread(target=feed, args=(r, s))
                for r, s in zip(receivers, shares, strict=True)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            # An answer may come from the spool (a slow _bulk): the phase ends when
            # Elasticsearch holds every event, so events/s is what reached the cluster.
            stored = _wait_stored(urls, warm_stored + len(bodies) * records)
        counters = [
            {key: round(after[key] - before[key]) for key in _COUNTERS}
            for before, after in zip(
                counters_before, [_counters(port) for port in http_ports], strict=True
            )
        ]
        if errors:
            raise SystemExit(f"{name}: load failed: {errors[0]!r}")
        peaks = [round(r.stat()[1] / 2**20, 1) for r in receivers]
    events = len(bodies) * records
    per_receiver = [len(s) * records for s in shares]
    stored -= warm_stored
    return {
        "phase": name,
        "events": events,
        **meter.figures(events, per_receiver),
        "receiver_cpu_us_per_event_net_of_idle": meter.net_of_idle(per_receiver, idle),
        "receiver_idle_cpu_ms_per_s": [round(v * 1e3, 2) for v in idle],
        "receiver_idle_share_of_cpu": meter.idle_share(idle),
        "receiver_counters": counters,
        "peak_rss_mib": peaks,
        "stored_events": stored,
        "retried_calls": sum(retried),
    }


def _spread(one: list[float | None], two: list[float | None]) -> float | None:
    """How much the worse of two receivers' CPU per event exceeds one receiver's."""
    if not one or one[0] is None or one[0] <= 0 or any(v is None for v in two):
        return None
    return max(v for v in two if v is not None) / one[0] - 1


def run(
    events: int = 60_000, records: int = 500, concurrency: int = 8, idle_s: float = 10.0
) -> dict[str, Any]:
    """Every phase on one cluster; the figures of each and the ratios."""
    n_requests = max(2, events // records)
    events = n_requests * records
    bodies = build_requests(n_requests, records)
    warmup = build_requests(_WARMUP_REQUESTS, records, seed=1)
    with _cluster() as (urls, es_pids):
        settings = _ingest_settings(urls[0])
        one, two = (
            _receivers_phase(urls, es_pids, bodies, warmup, records, concurrency, count, idle_s)
            for count in (1, 2)
        )
        # Last, on a cluster that has been working: first on a just-started one, the
        # ceiling cost Elasticsearch twice the CPU per event and read low.
        ceiling = _ceiling(urls, es_pids, bodies, warmup, settings)
        asyncio.run(_reset_indices(urls))
    phases = [ceiling, one, two]
    spread = _spread(one["receiver_cpu_us_per_event"], two["receiver_cpu_us_per_event"])
    net_key = "receiver_cpu_us_per_event_net_of_idle"
    net_spread = _spread(one[net_key], two[net_key])
    ratios: dict[str, Any] = {
        "1 receiver / ceiling": round(one["events_per_s"] / ceiling["events_per_s"], 3),
        "2 receivers / ceiling": round(two["events_per_s"] / ceiling["events_per_s"], 3),
        "ceiling target": CEILING_TARGET,
        "2 receivers within target": two["events_per_s"] / ceiling["events_per_s"]
        >= CEILING_TARGET,
        "receiver CPU/event, 2 vs 1 (worst)": None if spread is None else f"{spread:+.1%}",
        "CPU/event within 10 %": spread is not None and spread <= CPU_SPREAD_TARGET,
        "same, net of idle CPU": None if net_spread is None else f"{net_spread:+.1%}",
        "ES share of busy CPU (2 receivers)": two["es_share_of_machine_busy"],
    }
    return {"nodes": len(urls), "concurrency": concurrency, "phases": phases, "ratios": ratios}


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"{'phase':<30} {'events/s':>9} {'stored':>8} {'rcv us/ev':>16} {'es us/ev':>9} "
        f"{'es cores':>8} {'rcv cores':>9} {'ES share':>8}"
    ]
    for p in result["phases"]:
        rcv = ",".join(str(v) for v in p["receiver_cpu_us_per_event"]) or "-"
        lines.append(
            f"{p['phase']:<30} {p['events_per_s']:>9} {p['stored_events']:>8} {rcv:>16} "
            f"{p['es_cpu_us_per_event']:>9} {p['es_cores']:>8} {p['receivers_cores']:>9} "
            f"{p['es_share_of_machine_busy']:>8}"
        )
    receivers = [p for p in result["phases"] if "receiver_counters" in p]
    if receivers:
        lines.append("")
        lines.append(
            f"{'per receiver':<30} {'idle ms/s':>9} {'idle share':>10} {'us/ev net':>9} "
            f"{'bulks':>6} {'spooled':>8} {'blocks':>6} {'seal err':>8}"
        )
        for p in receivers:
            for i, c in enumerate(p["receiver_counters"]):
                lines.append(
                    f"{p['phase'].split(' (')[0] + f' #{i + 1}':<30} "
                    f"{p['receiver_idle_cpu_ms_per_s'][i]:>9} "
                    f"{p['receiver_idle_share_of_cpu'][i]:>10} "
                    f"{p['receiver_cpu_us_per_event_net_of_idle'][i]!s:>9} "
                    f"{c['bulk_requests']:>6} {c['records_spooled']:>8} "
                    f"{c['blocks_sealed']:>6} {c['sealing_errors']:>8}"
                )
    lines.append("")
    lines.append(kv_table(result["ratios"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_bench", description=__doc__)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--idle-s", type=float, default=10.0, help="each receiver's idle window (0: none)"
    )
    parser.add_argument("--quick", action="store_true", help="10,000 events")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(10_000 if args.quick else args.events, args.records, args.concurrency, args.idle_s)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
