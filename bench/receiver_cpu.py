"""Receiver CPU cost per audit event, measured over real gRPC.

Runs ``otel-audit serve`` in a subprocess with the null sink (validate, hash, build and
serialize each stored document, then drop it: everything but Elasticsearch), replays
pre-encoded ``ExportLogsServiceRequest`` messages of realistic audit events over a few
concurrent grpc.aio calls, and reports the receiver process's CPU time per event (from
``/proc/PID/stat``), events/s, request latency p50/p99 and peak RSS.

    python -m bench.receiver_cpu [--requests 200] [--records 500] [--concurrency 4]
                                 [--consumer null_sink|discard] [--json]

Target: <= 25 us of receiver CPU per event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

TARGET_US_PER_EVENT = 25.0
_REPO = Path(__file__).resolve().parents[1]
_ACTIONS = [
    ("invoice.update", "data_change", "invoice"),
    ("invoice.read", "data_access", "invoice"),
    ("user.login", "authentication", ""),
    ("role.grant", "permission_change", "role"),
    ("settings.update", "configuration", "setting"),
]


def build_requests(n_requests: int, n_records: int, seed: int = 7) -> list[bytes]:
    """Serialized export requests of realistic audit events (14 attributes, trace ids)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def kv(key: str, value: Any) -> KeyValue:
        if isinstance(value, int):
            return KeyValue(key=key, value=AnyValue(int_value=value))
        return KeyValue(key=key, value=AnyValue(string_value=value))

    rnd = random.Random(seed)
    out = []
    for r in range(n_requests):
        request = ExportLogsServiceRequest()
        rl = request.resource_logs.add()
        for key, value in (
            ("service.name", f"svc-{r % 5}"),
            ("service.version", "1.4.2"),
            ("deployment.environment.name", "prod"),
            ("host.name", f"node-{r % 3}"),
            ("telemetry.sdk.language", "python"),
        ):
            rl.resource.attributes.append(kv(key, value))
        sl = rl.scope_logs.add()
        sl.scope.name = "otel_audit"
        sl.scope.version = "0.1.0"
        now = time.time_ns()
        for i in range(n_records):
            action, category, rtype = _ACTIONS[rnd.randrange(len(_ACTIONS))]
            lr = sl.log_records.add()
            lr.time_unix_nano = now - rnd.randrange(10**9)
            lr.observed_time_unix_nano = now
            lr.severity_number = 9
            lr.severity_text = "INFO"
            lr.event_name = action
            lr.trace_id = rnd.randbytes(16)
            lr.span_id = rnd.randbytes(8)
            lr.flags = 1
            lr.body.string_value = f"{action} by u-{i}"
            attrs: list[tuple[str, Any]] = [
                ("audit.action", action),
                ("audit.category", category),
                ("audit.outcome", "success" if rnd.random() < 0.9 else "denied"),
                ("audit.actor.id", f"u-{rnd.randrange(10000)}"),
                ("audit.actor.type", "user"),
                ("audit.actor.name", "Ada Lovelace"),
                ("audit.event.id", str(uuid.UUID(int=rnd.getrandbits(128), version=4))),
                ("audit.tenant.id", "acme"),
                ("client.address", f"203.0.113.{rnd.randrange(255)}"),
                ("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
                ("session.id", f"s-{rnd.randrange(10**6)}"),
                ("http.response.status_code", 200),
            ]
            if rtype:
                attrs += [("audit.resource.type", rtype), ("audit.resource.id", f"{rtype}-{i}")]
            lr.attributes.extend(kv(k, v) for k, v in attrs)
        out.append(request.SerializeToString())
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds user+system, peak RSS bytes) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return cpu, peak


async def _replay(
    target: str, bodies: list[bytes], concurrency: int
) -> tuple[list[float], float, int]:
    import grpc

    latencies: list[float] = []
    rejected = 0
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")

        async def worker() -> None:
            nonlocal rejected
            from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
                ExportLogsServiceResponse,
            )

            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                raw = await export(body, timeout=60)
                latencies.append(time.perf_counter() - started)
                answer = ExportLogsServiceResponse()
                answer.ParseFromString(raw)
                rejected += answer.partial_success.rejected_log_records

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return latencies, wall, rejected


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(n_requests: int, n_records: int, concurrency: int, consumer: str) -> dict[str, Any]:
    """Run the benchmark; the measurements as a dict."""
    print(f"encoding {n_requests} x {n_records} events ...", file=sys.stderr)
    bodies = build_requests(n_requests, n_records)
    warmup = build_requests(5, n_records, seed=1)
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.yaml"
        config.write_text(
            f"grpc_endpoint: 127.0.0.1:{port}\nhttp_endpoint: 127.0.0.1:0\n"
            f"consumer: {consumer}\nspans_consumer: none\nlog_level: warning\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "otel_audit.cli", "serve", "--config", str(config)],
            cwd=_REPO,
        )
        try:
            _wait_port(port, proc)
            asyncio.run(_replay(f"127.0.0.1:{port}", warmup, concurrency))
            cpu_before, _ = _proc_stat(proc.pid)
            print(f"replaying over gRPC with {concurrency} concurrent calls ...", file=sys.stderr)
            latencies, wall, rejected = asyncio.run(
                _replay(f"127.0.0.1:{port}", bodies, concurrency)
            )
            cpu_after, peak_rss = _proc_stat(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    events = n_requests * n_records
    cpu_us = (cpu_after - cpu_before) / events * 1e6
    return {
        "consumer": consumer,
        "events": events,
        "requests": n_requests,
        "records_per_request": n_records,
        "concurrency": concurrency,
        "rejected": rejected,
        "receiver_cpu_us_per_event": round(cpu_us, 2),
        "events_per_s": round(events / wall),
        "latency_p50_ms": round(_percentile(latencies, 0.5) * 1000, 1),
        "latency_p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
        "peak_rss_mib": round(peak_rss / 2**20, 1),
        "target_us_per_event": TARGET_US_PER_EVENT,
        "within_target": cpu_us <= TARGET_US_PER_EVENT,
    }


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"receiver exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit("receiver did not start listening")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--consumer", default="null_sink", choices=("null_sink", "discard"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.requests, args.records, args.concurrency, args.consumer)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
