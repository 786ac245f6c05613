"""What the receiver benchmarks share: pre-encoded OTLP requests, a gRPC load client, and
``otel-audit serve`` run as a measured subprocess.

Requests are encoded once, before anything is timed, so the load client only sends bytes
over ``grpc.aio`` (the Python SDK exporter would measure itself, not the receiver).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from otel_audit.emit import event_id_at

__all__ = [
    "LOGS_EXPORT_METHOD",
    "Receiver",
    "Replay",
    "build_requests",
    "free_port",
    "percentile",
    "proc_stat",
    "replay",
    "run_receiver",
]

LOGS_EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
_REPO = Path(__file__).resolve().parents[1]
_ACTIONS = [
    ("invoice.update", "data_change", "invoice"),
    ("invoice.read", "data_access", "invoice"),
    ("user.login", "authentication", ""),
    ("role.grant", "permission_change", "role"),
    ("settings.update", "configuration", "setting"),
]


def build_requests(n_requests: int, n_records: int, seed: int = 7) -> list[bytes]:
    """Serialized export requests of realistic audit events (14 attributes, trace ids).

    The same seed on the same UTC day gives the same event ids, so two runs store the same
    documents: each id is a UUIDv7 of the day's first millisecond (the receiver places an
    event in the daily index of its id's time) with random bits from the seed.
    """
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def kv(key: str, value: Any) -> KeyValue:
        if isinstance(value, int):
            return KeyValue(key=key, value=AnyValue(int_value=value))
        return KeyValue(key=key, value=AnyValue(string_value=value))

    rnd = random.Random(seed)
    day_ms = time.time_ns() // 86_400_000_000_000 * 86_400_000
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
                ("audit.event.id", event_id_at(day_ms, rnd.getrandbits(74))),
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


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds user+system, peak RSS bytes) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return cpu, peak


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(slots=True)
class Replay:
    """What the load client saw: one latency per request (retries included), wall time,
    rejected records, and how many calls were refused retryably and sent again."""

    latencies_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    rejected: int = 0
    retries: int = 0


_RETRYABLE = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")
_MAX_RETRIES = 20


async def _replay(target: str, bodies: list[bytes], concurrency: int) -> Replay:
    import grpc
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

    out = Replay()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as channel:
        export = channel.unary_unary(LOGS_EXPORT_METHOD)

        async def send(body: bytes) -> bytes:
            # As an exporter does: a retryable refusal (the receiver's backpressure, or
            # a receiver restarting) is sent again after a growing pause.
            pause = 0.05
            for attempt in range(_MAX_RETRIES + 1):
                try:
                    return bytes(await export(body, timeout=120))
                except grpc.aio.AioRpcError as exc:
                    if exc.code().name not in _RETRYABLE or attempt == _MAX_RETRIES:
                        raise
                out.retries += 1
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
            raise AssertionError("unreachable")

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                raw = await send(body)
                out.latencies_s.append(time.perf_counter() - started)
                answer = ExportLogsServiceResponse()
                answer.ParseFromString(raw)
                out.rejected += answer.partial_success.rejected_log_records

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        out.wall_s = time.perf_counter() - started
    return out


def replay(target: str, bodies: list[bytes], concurrency: int) -> Replay:
    """Send ``bodies`` as OTLP/gRPC log exports over ``concurrency`` concurrent calls."""
    return asyncio.run(_replay(target, bodies, concurrency))


@dataclass(slots=True)
class Receiver:
    """A running ``otel-audit serve`` subprocess."""

    process: subprocess.Popen[bytes]
    grpc_port: int
    workdir: Path

    @property
    def target(self) -> str:
        """host:port for the gRPC channel."""
        return f"127.0.0.1:{self.grpc_port}"

    def stat(self) -> tuple[float, int]:
        """(CPU seconds so far, peak RSS bytes) of the receiver process."""
        return proc_stat(self.process.pid)


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"receiver exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"receiver did not listen on {port} within {timeout_s:g} s")


@contextmanager
def run_receiver(
    config: Mapping[str, Any],
    *,
    python_args: tuple[str, ...] = (),
    env: Mapping[str, str | None] | None = None,
    stop_timeout_s: float = 60.0,
) -> Iterator[Receiver]:
    """Run ``otel-audit serve`` with ``config`` (plus loopback endpoints) until the block ends.

    Every listener is on loopback and a free or kernel-picked port, so several benchmarks and
    test runs do not collide. Relative paths in ``config`` (``spool_dir``, sections'
    directories) are inside a temporary working directory. ``python_args`` go before
    ``-m`` (e.g. ``-m cProfile -o FILE``). The receiver is stopped with SIGTERM, so it
    drains and flushes as in production.
    """
    port = free_port()
    full = {
        "grpc_endpoint": f"127.0.0.1:{port}",
        "http_endpoint": "127.0.0.1:0",
        "query_api_endpoint": "127.0.0.1:0",
        "spans_consumer": "none",
        "log_level": "warning",
        **config,
    }
    with tempfile.TemporaryDirectory(prefix="otel-audit-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "bench.yaml").write_text(yaml.safe_dump(full))
        proc = subprocess.Popen(
            [
                sys.executable,
                *python_args,
                "-m",
                "otel_audit.cli",
                "serve",
                "--config",
                str(workdir / "bench.yaml"),
            ],
            cwd=workdir,
            env=_environment(env or {}),
        )
        try:
            _wait_port(port, proc)
            yield Receiver(proc, port, workdir)
        finally:
            proc.terminate()
            try:
                proc.wait(stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _environment(changes: Mapping[str, str | None]) -> dict[str, str]:
    out = {**os.environ, "PYTHONPATH": str(_REPO)}
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out
