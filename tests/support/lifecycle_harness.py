"""Helpers of the lifecycle tests: a receiver config on the real Elasticsearch and the real
S3 server, an in-process ingest (the receiver's own, with its sealer) to store back-dated
events and record the lifecycle's audit events, and a runner with an injected clock."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from elasticsearch import Elasticsearch

from indexer.lifecycle.runner import LifecycleRunner, RunReport, StepHook
from indexer.local_s3 import LocalS3, LocalS3Config
from otel_audit.emit import event_id_at
from otel_audit.record import LogRecordData
from receiver.config import ReceiverConfig, load_config
from receiver.ingest.consumer import IngestConsumer, build_consumer
from receiver.lifecycle import build_runner, consumer_recorder

DAY_MS = 86_400_000
BUCKET = "otel-audit-test"


def free_port() -> int:
    """A free port outside the ephemeral range (a restarted server is not beaten to it)."""
    from tests.support.collector_build import free_port as outside_ephemeral

    return outside_ephemeral()


def local_s3(data_dir: Path) -> LocalS3:
    """The real S3 server (s3proxy) on a free port, storing under ``data_dir``; use it as a
    context manager (it starts on enter and stops on exit)."""
    base = LocalS3Config.from_env()
    config = LocalS3Config(
        url=f"http://127.0.0.1:{free_port()}", cache_dir=base.cache_dir, data_dir=data_dir
    )
    return LocalS3(config=config)


def write_config(
    tmp: Path,
    es_url: str,
    s3: LocalS3 | None,
    *,
    prefix: str = "",
    query: dict[str, Any] | None = None,
    **lifecycle: Any,
) -> Path:
    """A receiver YAML config under ``tmp``; the cold store is the S3 server (or a dir)."""
    prefix = prefix or uuid.uuid4().hex[:8]
    if s3 is not None:
        opts = s3.client_options()
        cold = {
            "url": f"s3://{BUCKET}/{prefix}",
            "endpoint_url": opts["endpoint_url"],
            "access_key_id": opts["aws_access_key_id"],
            "secret_access_key": opts["aws_secret_access_key"],
            "create_bucket": True,
        }
    else:
        cold = {"url": str(tmp / "archive")}
    section: dict[str, Any] = {"hot_days": 30, "retain_days": 120, "cold_store": cold}
    section.update(lifecycle)
    data = {
        "es_url": es_url,
        "spool_dir": str(tmp / "spool"),
        "http_endpoint": f"127.0.0.1:{free_port()}",  # nothing listens: record in process
        "bulk_flush_interval_ms": 2.0,
        "integrity": {
            "state_dir": str(tmp / "integrity-state"),
            "chain_id": "lifecycle-test",
            "block_max_events": 200,
            "block_max_interval_ms": 50,
            "heartbeat_interval_s": 3600.0,
        },
        "lifecycle": section,
        "query_api_endpoint": "127.0.0.1:0",
    }
    if query is not None:
        data["query"] = query
    path = tmp / "receiver.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class Ingest:
    """The receiver's ingest (with its sealer) in a thread of its own; ``with`` it."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.consumer: IngestConsumer | None = None

    def __enter__(self) -> Ingest:
        self.thread.start()
        self.consumer = build_consumer(self.config)
        self._call(self.consumer.start())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.consumer is not None
        self._call(self.consumer.shutdown(20))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)

    def store(self, records: list[LogRecordData]) -> None:
        assert self.consumer is not None
        for i in range(0, len(records), 500):
            result = self._call(self.consumer.consume_logs(records[i : i + 500]))
            assert result.rejected == 0, result

    def seal(self) -> None:
        """Seal everything stored so far."""
        assert self.consumer is not None
        sealer = getattr(self.consumer, "sealer", None) or getattr(self.consumer, "_sealer", None)
        if sealer is not None:
            self._call(sealer.force_flush())

    @property
    def record(self) -> Callable[[LogRecordData], None]:
        assert self.consumer is not None
        return consumer_recorder(self.consumer.consume_logs, self.loop)


def records_on(
    day_ms: int, n: int, *, tenant: str = "", category: str = "data_change", actor: str = ""
) -> list[LogRecordData]:
    """``n`` valid audit records during the UTC day starting at ``day_ms``."""
    out = []
    for i in range(n):
        ts = (day_ms + 3_600_000 + i * 1000) * 1_000_000
        attrs: dict[str, Any] = {
            "audit.event.id": event_id_at(ts // 1_000_000),
            "audit.action": "invoice.update" if i % 3 else "invoice.read",
            "audit.category": category,
            "audit.outcome": "success" if i % 5 else "failure",
            "audit.actor.id": actor or f"user-{i % 7}",
            "audit.actor.type": "user",
            "audit.resource.type": "invoice",
            "audit.resource.id": f"inv-{i}",
        }
        if tenant:
            attrs["audit.tenant.id"] = tenant
        out.append(
            LogRecordData(
                attributes=attrs,
                resource={"service.name": "billing"},
                time_unix_nano=ts,
                observed_time_unix_nano=ts,
                body=f"invoice inv-{i} touched",
            )
        )
    return out


def day_start_ms(days_ago: int, now_ms: int | None = None) -> int:
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return (now // DAY_MS - days_ago) * DAY_MS


def day_name(day_ms: int) -> str:
    return time.strftime("%Y.%m.%d", time.gmtime(day_ms // 1000))


class Clock:
    """The runner's injected clock: real time shifted by whole days."""

    def __init__(self) -> None:
        self.shift_ms = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.shift_ms

    def advance_days(self, days: int) -> None:
        self.shift_ms += days * DAY_MS

    def advance_s(self, seconds: float) -> None:
        self.shift_ms += int(seconds * 1000)


def runner(
    config_path: Path, record: Any, clock: Clock, on_step: StepHook | None = None
) -> LifecycleRunner:
    config = load_config(config_path)
    return build_runner(config, record, owner="test-runner", clock_ms=clock, on_step=on_step)


def lifecycle_events(es: Elasticsearch) -> list[dict[str, Any]]:
    """The lifecycle's own audit events stored so far."""
    es.indices.refresh(index="audit-events-*")
    resp = es.search(
        index="audit-events",
        query={"prefix": {"event.action": "audit_log."}},
        size=1000,
    )
    return [h["_source"] for h in resp["hits"]["hits"]]


def run(runner: LifecycleRunner, **kw: Any) -> RunReport:
    report = runner.run(**kw)
    assert report.ok, report.errors
    assert not report.skipped, report.skipped
    return report
