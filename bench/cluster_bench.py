"""Ingest on a three-node Elasticsearch cluster with one and with two receivers, sealing on,
against the raw ``_bulk`` ceiling of the same cluster measured in the same run.

Phases, on fresh indices each (same pre-encoded OTLP requests, fixed ids):

1. ceiling: the documents the receiver would store, pre-serialized, sent straight to
   ``_bulk`` over every node (the official client round-robins), the receiver's bulk size
   and number of concurrent bulks;
2. one receiver: ``otel-audit serve`` (ingest + seal) given every node's URL, fed over gRPC;
3. two receivers: two such processes (own spool, state and chain), each fed half the
   requests at the same time.

For each: events/s, the ratio to the ceiling, each receiver's CPU per event (its process
CPU time / the events it took), Elasticsearch's CPU per event and the cores each party
used (ES share of the machine is the bottleneck evidence on a small machine).

    python -m bench.cluster_bench [--events 60000] [--records 500] [--concurrency 8]
        [--quick] [--json]

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


@contextmanager
def _cluster() -> Iterator[tuple[list[str], list[int]]]:
    """(node URLs, node pids) of a running three-node cluster."""
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
) -> dict[str, Any]:
    asyncio.run(_reset_indices(urls))
    env: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith("OTEL_AUDIT_INTEGRITY__")
    }
    shares = [bodies[i::count] for i in range(count)]
    with ExitStack() as stack:
        receivers = [
            stack.enter_context(run_receiver(_receiver_config(urls, free_port()), env=env))
            for _ in range(count)
        ]
        for receiver in receivers:
            replay(receiver.target, warmup, concurrency)
        warm_stored = asyncio.run(_count_events(urls))
        name = f"{count} receiver{'s' if count > 1 else ''} (ingest + seal)"
        _progress(f"{name}: {len(bodies) * records} events, {concurrency} calls per receiver")
        errors: list[BaseException] = []

        def feed(receiver: Receiver, share: list[bytes]) -> None:
            try:
                replay(receiver.target, share, concurrency)
            except BaseException as exc:  # reported after the phase
                errors.append(exc)

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
        if errors:
            raise SystemExit(f"{name}: load failed: {errors[0]!r}")
        peaks = [round(r.stat()[1] / 2**20, 1) for r in receivers]
    events = len(bodies) * records
    stored -= warm_stored
    return {
        "phase": name,
        "events": events,
        **meter.figures(events, [len(s) * records for s in shares]),
        "peak_rss_mib": peaks,
        "stored_events": stored,
    }


def run(events: int = 60_000, records: int = 500, concurrency: int = 8) -> dict[str, Any]:
    """Every phase on one cluster; the figures of each and the ratios."""
    n_requests = max(2, events // records)
    events = n_requests * records
    bodies = build_requests(n_requests, records)
    warmup = build_requests(_WARMUP_REQUESTS, records, seed=1)
    with _cluster() as (urls, es_pids):
        settings = _ingest_settings(urls[0])
        phases = [_ceiling(urls, es_pids, bodies, warmup, settings)]
        for count in (1, 2):
            phases.append(
                _receivers_phase(urls, es_pids, bodies, warmup, records, concurrency, count)
            )
        asyncio.run(_reset_indices(urls))
    ceiling, one, two = phases
    one_cpu = one["receiver_cpu_us_per_event"][0]
    spread = max(two["receiver_cpu_us_per_event"]) / one_cpu - 1 if one_cpu else None
    ratios: dict[str, Any] = {
        "1 receiver / ceiling": round(one["events_per_s"] / ceiling["events_per_s"], 3),
        "2 receivers / ceiling": round(two["events_per_s"] / ceiling["events_per_s"], 3),
        "ceiling target": CEILING_TARGET,
        "2 receivers within target": two["events_per_s"] / ceiling["events_per_s"]
        >= CEILING_TARGET,
        "receiver CPU/event, 2 vs 1 (worst)": None if spread is None else f"{spread:+.1%}",
        "CPU/event within 10 %": spread is not None and spread <= CPU_SPREAD_TARGET,
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
    lines.append("")
    lines.append(kv_table(result["ratios"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_bench", description=__doc__)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="10,000 events")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(10_000 if args.quick else args.events, args.records, args.concurrency)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
