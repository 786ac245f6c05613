"""The drills' moving parts: a 3-node cluster, several receivers behind the real Collector,
a steady load with counted acknowledgements, and the counting and verifying afterwards.

One :class:`Stack` is two or more ``otel-audit serve`` processes (own spool, integrity
state and chain each, one shared checkpoint directory) behind one ``otelcol-audit`` with
its file_storage queue; the Collector's OTLP exporter balances over the receivers with
gRPC's round_robin through a name that :class:`~tests.drill.dns.LoopbackDns` resolves to
127.0.0.1, 127.0.0.2 ... (the receivers share one gRPC port, each on its own address).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan

from otel_audit.emit import new_event_id
from tests.drill.dns import LoopbackDns
from tests.e2e.conftest import ReceiverProcess
from tests.support.collector_build import MAIN_CONFIG, CollectorProcess, free_port

__all__ = ["DrillRow", "LoadGenerator", "Stack", "count_store", "print_table", "verify_all"]

_REPO = Path(__file__).resolve().parents[2]
MULTI_CONFIG = _REPO / "collector-config" / "otelcol-audit-multi.yaml"
FILE_BACKEND = _REPO / "collector-config" / "testdata" / "backend-file.yaml"
EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
RECEIVERS_NAME = "receivers.drill.internal"
LOAD_SERVICE = "drill-load"


@dataclass
class DrillReceiver(ReceiverProcess):
    """A receiver whose gRPC server listens on its own loopback address, killable."""

    grpc_host: str = "127.0.0.1"
    checkpoint_dir: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def grpc_endpoint(self) -> str:
        return f"{self.grpc_host}:{self.grpc_port}"

    def environment(self) -> dict[str, str]:
        env = super().environment()
        if self.checkpoint_dir is not None:
            env["OTEL_AUDIT_INTEGRITY__CHECKPOINT_DIR"] = str(self.checkpoint_dir)
        env.update(self.extra_env)
        return env

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return None if self._proc is None else self._proc.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; the process is gone when this returns."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


@dataclass
class DrillCollector(CollectorProcess):
    """The real Collector, killable with SIGKILL and restartable on its queue."""

    def kill(self) -> None:
        """SIGKILL the Collector; its persistent queue stays on disk."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def _port_free_on(hosts: list[str]) -> int:
    """A port (outside the ephemeral range) free on every one of ``hosts``."""
    import socket

    for _ in range(100):
        port = free_port()
        try:
            for host in hosts:
                with socket.socket() as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


class Stack:
    """Receivers behind one Collector, writing to ``es_url`` (comma-separated allowed)."""

    def __init__(
        self,
        work_dir: Path,
        es_url: str,
        collector_binary: Path,
        receivers: int = 2,
        receiver_env: dict[str, str] | None = None,
    ) -> None:
        self.work_dir = work_dir
        self.es_url = es_url
        hosts = [f"127.0.0.{i + 1}" for i in range(receivers)]
        self.dns = LoopbackDns(RECEIVERS_NAME, hosts)
        grpc_port = _port_free_on(hosts)
        self.checkpoint_dir = work_dir / "checkpoints"
        self.receivers = [
            DrillReceiver(
                work_dir=work_dir / f"receiver-{i}",
                es_url=es_url,
                grpc_host=host,
                grpc_port=grpc_port,
                checkpoint_dir=self.checkpoint_dir,
                extra_env=dict(receiver_env or {}),
            )
            for i, host in enumerate(hosts)
        ]
        self.collector = DrillCollector(
            binary=collector_binary,
            receiver_endpoint=self.dns.target(grpc_port),
            work_dir=work_dir / "collector",
            configs=(MAIN_CONFIG, FILE_BACKEND, MULTI_CONFIG),
            env={"OTEL_AUDIT_BACKEND_FILE": str(work_dir / "collector" / "backend.jsonl")},
        )

    def start(self) -> None:
        """Every receiver (ready), then the Collector (healthy)."""
        for receiver in self.receivers:
            receiver.start(timeout_s=120)
        self.collector.start(timeout_s=60)

    def close(self) -> None:
        """Stop the Collector, then the receivers, then the resolver."""
        self.collector.shutdown()
        for receiver in self.receivers:
            receiver.stop()
        self.dns.close()

    def public_key_dirs(self) -> list[Path]:
        """Each receiver's key directory (its public key is next to the private one)."""
        return [r.work_dir / "keys" for r in self.receivers]

    def processes(self) -> dict[str, int]:
        """name -> pid of every running receiver."""
        return {f"receiver-{i}": r.pid for i, r in enumerate(self.receivers) if r.pid}


# -- load ------------------------------------------------------------------------------


def export_request(run: str, first: int, count: int) -> tuple[bytes, list[str]]:
    """One OTLP export request of ``count`` valid audit events; their event ids."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.append(
        KeyValue(key="service.name", value=AnyValue(string_value=LOAD_SERVICE))
    )
    sl = rl.scope_logs.add()
    now = time.time_ns()
    ids = []
    for n in range(first, first + count):
        event_id = new_event_id()
        ids.append(event_id)
        lr = sl.log_records.add()
        lr.time_unix_nano = now
        lr.observed_time_unix_nano = now
        lr.severity_number = 9
        lr.body.string_value = f"drill event {n}"
        for key, value in (
            ("audit.action", "invoice.update"),
            ("audit.category", "data_change"),
            ("audit.outcome", "success"),
            ("audit.actor.id", f"u-{n % 97}"),
            ("audit.actor.type", "user"),
            ("audit.resource.type", "invoice"),
            ("audit.resource.id", f"inv-{n}"),
            ("audit.event.id", event_id),
        ):
            lr.attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))
    return request.SerializeToString(), ids


class LoadGenerator:
    """A steady stream of export requests to the Collector, from a thread.

    ``sent`` counts events emitted (each once); ``acked`` holds the ids of events whose
    request the Collector answered OK (it answers after its persistent queue took them).
    Each request is tried at least once; a failed one is sent again after a short pause,
    like an SDK's retry, until the Collector takes it or the generator stops.
    """

    def __init__(
        self, target: str, rate_per_s: float, batch: int = 50, run: str | None = None
    ) -> None:
        self.target = target
        self.rate_per_s = rate_per_s
        self.batch = batch
        self.run = run or uuid.uuid4().hex
        self.sent = 0
        self.acked: set[str] = set()
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="drill-load", daemon=True)

    def start(self) -> LoadGenerator:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the request in flight (a pending retry is dropped unacknowledged)."""
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        import grpc

        interval = self.batch / self.rate_per_s
        channel = grpc.insecure_channel(self.target)
        export = channel.unary_unary(EXPORT)
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                body, ids = export_request(self.run, self.sent, self.batch)
                self.sent += len(ids)
                while True:  # tried at least once: what counts as sent was sent
                    try:
                        export(body, timeout=10)
                    except grpc.RpcError:
                        self.failures += 1
                        if self._stop.wait(0.5):
                            break
                        continue
                    self.acked.update(ids)
                    break
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_at = time.monotonic()
        finally:
            channel.close()


# -- counting and verifying --------------------------------------------------------------


@dataclass
class StoreCount:
    """What Elasticsearch holds: distinct event ids and how many documents repeat one."""

    ids: set[str]
    duplicated: int


def count_store(es: Elasticsearch) -> StoreCount:
    """Every audit event document in every index (all days), by ``event.id``."""
    es.indices.refresh(index="audit-events-*", ignore_unavailable=True, allow_no_indices=True)
    ids: set[str] = set()
    docs = 0
    for hit in scan(
        es,
        index="audit-events-*",
        # Only the load's events: the receivers also store their own (query API access).
        query={"query": {"term": {"service.name": LOAD_SERVICE}}},
        _source=["event.id"],
        size=5000,
        ignore_unavailable=True,
    ):
        docs += 1
        ids.add(hit["_source"]["event"]["id"])
    return StoreCount(ids=ids, duplicated=docs - len(ids))


def wait_stored(
    es: Elasticsearch, acked: set[str], timeout_s: float, poll_s: float = 2.0
) -> tuple[StoreCount, float]:
    """Poll until every acknowledged id is stored (or ``timeout_s``); (count, seconds)."""
    started = time.monotonic()
    while True:
        try:
            count = count_store(es)
        except Exception:  # ES coming back: keep polling until the deadline
            count = StoreCount(set(), 0)
        if acked <= count.ids or time.monotonic() - started > timeout_s:
            return count, time.monotonic() - started
        time.sleep(poll_s)


@dataclass
class Verified:
    """What ``otel-audit verify`` said over every chain."""

    ok: bool
    summary: str
    kinds: set[str] = field(default_factory=set)
    """Kinds of the findings; ``modified-after-seal`` for 'event changed since sealed'."""
    pending: int = 0
    """Events stored but not sealed yet (verify counts them apart, not as findings)."""


def verify_all(stack: Stack, es_url: str) -> Verified:
    """``otel-audit verify`` over every chain in one run."""
    args = [sys.executable, "-m", "otel_audit.cli", "verify", "--json", "--quiet"]
    args += ["--es-url", es_url, "--checkpoint-dir", str(stack.checkpoint_dir)]
    for keys in stack.public_key_dirs():
        args += ["--public-key", str(keys)]
    done = subprocess.run(args, cwd=_REPO, capture_output=True, text=True, timeout=600)
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        return Verified(False, f"exit {done.returncode}: {done.stderr.strip()[-300:]}")
    chains = report.get("chains") or {}
    findings = report.get("findings") or []
    totals = report.get("summary") or {}
    summary = (
        f"exit {done.returncode}, {len(chains)} chains, {totals.get('blocks_checked')} blocks, "
        f"{totals.get('events_checked')} events, {totals.get('events_pending')} pending, "
        f"{len(findings)} findings"
    )
    if findings:
        summary += ": " + "; ".join(str(f.get("message", f))[:120] for f in findings[:3])
    kinds = {
        "modified-after-seal"
        if str(f.get("message", "")).startswith("event changed since it was sealed")
        else str(f.get("kind"))
        for f in findings
    }
    pending = int(totals.get("events_pending") or 0)
    return Verified(done.returncode == 0 and report.get("ok") is True, summary, kinds, pending)


# -- the table ----------------------------------------------------------------------------


@dataclass
class DrillRow:
    """One drill's outcome."""

    name: str
    sent: int
    acknowledged: int
    stored: int
    lost: int
    duplicated: int
    recovery_s: float
    verify_ok: bool
    verify_summary: str
    notes: str = ""
    verify_kinds: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.verify_ok

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "verify_kinds": sorted(self.verify_kinds), "ok": self.ok}


HEADER = (
    f"{'drill':<34} {'sent':>8} {'acked':>8} {'stored':>8} {'lost':>5} {'dup':>5} "
    f"{'recov_s':>8}  verify"
)


def format_row(row: DrillRow) -> str:
    verdict = "clean" if row.verify_ok else "FAILED"
    line = (
        f"{row.name:<34} {row.sent:>8} {row.acknowledged:>8} {row.stored:>8} "
        f"{row.lost:>5} {row.duplicated:>5} {row.recovery_s:>8.1f}  {verdict} "
        f"({row.verify_summary})"
    )
    return line + (f"\n{'':<34} {row.notes}" if row.notes else "")


def print_table(rows: list[DrillRow], out: Callable[[str], Any] = print) -> None:
    out(HEADER)
    for row in rows:
        out(format_row(row))


def finish(
    name: str,
    stack: Stack,
    load: LoadGenerator,
    es: Elasticsearch,
    es_url: str,
    fault_ended: float,
    drain_timeout_s: float = 300.0,
    notes: str = "",
    seal_timeout_s: float = 120.0,
) -> DrillRow:
    """Stop the load, wait until every acknowledged event is stored, count, verify.

    Recovery is the time from the end of the last fault until every acknowledged event
    was searchable.
    """
    load.stop()
    count, _waited = wait_stored(es, load.acked, drain_timeout_s)
    recovery = time.monotonic() - fault_ended
    # The sealers close their last blocks after the events are stored: verify again while
    # it reports events as pending (stored, not sealed yet), up to ``seal_timeout_s``.
    time.sleep(3)
    verified = verify_all(stack, es_url)
    deadline = time.monotonic() + seal_timeout_s
    while verified.pending and time.monotonic() < deadline:
        time.sleep(10)
        verified = verify_all(stack, es_url)
    run_ids = count.ids
    if verified.pending or not verified.ok:
        notes = "; ".join(n for n in (notes, sealing_notes(stack)) if n)
    return DrillRow(
        name=name,
        sent=load.sent,
        acknowledged=len(load.acked),
        stored=len(run_ids),
        lost=len(load.acked - run_ids),
        duplicated=count.duplicated,
        recovery_s=recovery,
        # Events still unsealed after seal_timeout_s are not a clean chain either.
        verify_ok=verified.ok and not verified.pending,
        verify_summary=verified.summary,
        notes=notes,
        verify_kinds=verified.kinds,
    )


def sealing_notes(stack: Stack, per_receiver: int = 2) -> str:
    """What each receiver logged about sealing trouble (its last distinct messages), so a
    row with unsealed events says why."""
    out = []
    for i, receiver in enumerate(stack.receivers):
        seen: list[str] = []
        try:
            lines = receiver.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict):
                continue
            msg = str(rec.get("message") or rec.get("msg") or "")
            level = str(rec.get("level") or rec.get("levelname") or "").upper()
            about_sealing = level == "WARNING" and ("seal" in msg or "lease" in msg)
            if (level in ("ERROR", "CRITICAL") or about_sealing) and msg[:80] not in seen:
                seen.append(msg[:80])
        if seen:
            out.append(f"receiver-{i}: " + " | ".join(seen[-per_receiver:]))
    return "; ".join(out)


def environ_float(name: str, default: float) -> float:
    """A number from the environment (drill sizes), or ``default``."""
    raw = os.environ.get(name)
    return float(raw) if raw else default
