"""The lifecycle inside the receiver: building a runner from the configuration, recording
its audit events, and the schedule ``serve`` runs it on.

``serve`` starts :class:`LifecycleSchedule` when ``lifecycle.enabled``: every
``interval_s`` (the first run shortly after start) it runs
:class:`indexer.lifecycle.runner.LifecycleRunner` in a worker thread. Several receivers
may all schedule it; the lease in Elasticsearch lets one run at a time. The runner's
audit events go to this receiver's own ingest in process and each is durable before the
step it reports is taken. ``otel-audit lifecycle run`` builds the same runner and sends
them to a running receiver over OTLP/HTTP (:func:`otlp_recorder`), or, with none running,
to an ingest of its own (:func:`local_recorder`).
"""

from __future__ import annotations

import asyncio
import calendar
import concurrent.futures
import contextlib
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from indexer.es_client import EsConnection, sync_client
from indexer.integrity.checkpoint_store import open_checkpoint_store
from indexer.lifecycle.audit_events import RecordEvent
from indexer.lifecycle.config import LifecycleConfig
from indexer.lifecycle.export import PageReader
from indexer.lifecycle.runner import LifecycleRunner, RunReport, StepHook
from indexer.lifecycle.store import ColdStore, open_cold_store
from indexer.spans import SpansConfig
from otel_audit.integrity import Keyring
from otel_audit.integrity.merkle import FastExtend
from otel_audit.record import LogRecordData
from receiver import metrics, native
from receiver.config import ReceiverConfig
from receiver.sealing.config import IntegrityConfig
from receiver.sealing.sealer import load_signing_key

__all__ = [
    "LifecycleSchedule",
    "build_runner",
    "consumer_recorder",
    "integrity_config_of",
    "keyring_of",
    "lifecycle_config_of",
    "otlp_recorder",
]

_log = logging.getLogger("otel_audit.lifecycle")


def lifecycle_config_of(config: ReceiverConfig) -> LifecycleConfig:
    """The ``lifecycle`` section."""
    return config.section("lifecycle", LifecycleConfig)


def integrity_config_of(config: ReceiverConfig) -> IntegrityConfig:
    """The ``integrity`` section with the sealer's defaults for its directories applied."""
    integrity = config.section("integrity", IntegrityConfig)
    if not integrity.state_dir:
        spool = Path(config.spool_dir)
        integrity = replace(integrity, state_dir=str(spool.parent / "integrity-state"))
    if not integrity.checkpoint_dir:
        integrity = replace(
            integrity, checkpoint_dir=str(Path(integrity.state_dir) / "checkpoints")
        )
    return integrity


def keyring_of(config: ReceiverConfig) -> Keyring:
    """The receiver's own public key plus ``lifecycle.public_key_paths`` (rotated keys)."""
    key = load_signing_key(integrity_config_of(config))
    ring = Keyring([key.public_key()])
    extra = lifecycle_config_of(config).public_key_paths
    if extra:
        older = Keyring.from_paths(extra)
        for kid in older:
            public = older.get(kid)
            if public is not None:
                ring.add(public)
    return ring


def cold_store_of(config: ReceiverConfig) -> ColdStore:
    """The configured cold store."""
    return open_cold_store(lifecycle_config_of(config).cold_store)


def _native_extend() -> FastExtend | None:
    """The extension's Merkle extension when it is in use (the archive's read-back check
    recomputes every block's root from a day's events)."""
    ext = native.module()
    return getattr(ext, "merkle_extend", None) if ext is not None else None


def _native_page_reader() -> PageReader | None:
    """The extension's archive page reader when it is in use (the export's pages are
    parsed, canonicalized and hashed by it without the GIL)."""
    ext = native.module()
    return getattr(ext, "archive_page", None) if ext is not None else None


def build_runner(
    config: ReceiverConfig,
    record: RecordEvent | None,
    *,
    owner: str = "",
    clock_ms: Callable[[], int] | None = None,
    on_step: StepHook | None = None,
    progress: Callable[[str], None] | None = None,
) -> LifecycleRunner:
    """A runner for this receiver's configuration."""
    integrity = integrity_config_of(config)
    key = load_signing_key(integrity)
    es = sync_client(EsConnection.from_config(config), request_timeout=120)
    return LifecycleRunner(
        es,
        lifecycle_config_of(config),
        cold_store_of(config),
        private_key=key,
        keyring=keyring_of(config),
        checkpoints=open_checkpoint_store(integrity.checkpoint_dir),
        record=record,
        owner=owner or f"{socket.gethostname()}:{integrity.chain_id or os.getpid()}",
        clock_ms=clock_ms,
        on_step=on_step,
        progress=progress,
        spans_retention_days=config.section("spans", SpansConfig).retention_days,
        fast_extend=_native_extend(),
        read_page=_native_page_reader(),
        fast_leaves=getattr(native.module(), "leaf_hashes", None),
    )


def consumer_recorder(
    consume_logs: Callable[[list[LogRecordData]], Awaitable[Any]],
    loop: asyncio.AbstractEventLoop,
    timeout_s: float = 60.0,
) -> RecordEvent:
    """Records through the receiver's own ingest, from the runner's worker thread."""

    async def write(rec: LogRecordData) -> Any:
        return await consume_logs([rec])

    def record(rec: LogRecordData) -> None:
        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(write(rec), loop)
        result = future.result(timeout_s)
        if getattr(result, "rejected", 0):
            raise RuntimeError(f"lifecycle audit event refused: {result.error_message}")

    return record


def _any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    return {"stringValue": str(value)}


def otlp_recorder(http_endpoint: str, timeout_s: float = 30.0) -> RecordEvent:
    """Records sent to a running receiver over OTLP/HTTP (JSON), one request each; the
    receiver answers 200 only once the record is durable, so a success is a durable one."""
    url = http_endpoint if "://" in http_endpoint else f"http://{http_endpoint}"
    url = url.rstrip("/") + "/v1/logs"

    def record(rec: LogRecordData) -> None:
        body = {
            "resourceLogs": [
                {
                    "resource": {
                        "attributes": [
                            {"key": k, "value": _any_value(v)} for k, v in rec.resource.items()
                        ]
                    },
                    "scopeLogs": [
                        {
                            "scope": {"name": rec.scope_name},
                            "logRecords": [
                                {
                                    "timeUnixNano": str(rec.time_unix_nano),
                                    "observedTimeUnixNano": str(rec.observed_time_unix_nano),
                                    "severityNumber": rec.severity_number,
                                    "severityText": rec.severity_text,
                                    "eventName": rec.event_name,
                                    "body": {"stringValue": str(rec.body)},
                                    "attributes": [
                                        {"key": k, "value": _any_value(v)}
                                        for k, v in rec.attributes.items()
                                    ],
                                }
                            ],
                        }
                    ],
                }
            ]
        }
        req = urllib.request.Request(
            url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                answer = orjson.loads(resp.read() or b"{}")
        except (urllib.error.URLError, OSError) as exc:
            raise RuntimeError(f"cannot record the lifecycle audit event at {url}: {exc}") from exc
        partial = answer.get("partialSuccess") or {}
        if int(partial.get("rejectedLogRecords", 0) or 0):
            raise RuntimeError(f"lifecycle audit event refused: {partial.get('errorMessage')}")

    return record


def observe(report: RunReport) -> None:
    """Export a run's outcome as metrics."""
    metrics.LIFECYCLE_RUNS.labels(outcome="ok" if report.ok else "error").inc()
    metrics.LIFECYCLE_ERRORS.inc(len(report.errors))
    metrics.LIFECYCLE_LAST_RUN.set(report.finished_ms / 1000)
    metrics.LIFECYCLE_ARCHIVED_DAYS.set(report.archived_days)
    metrics.LIFECYCLE_ARCHIVED_BYTES.set(report.archived_bytes)
    if report.oldest_hot_day:
        day = time.strptime(report.oldest_hot_day, "%Y.%m.%d")
        metrics.LIFECYCLE_OLDEST_HOT_DAY.set(calendar.timegm(day))


class LifecycleSchedule:
    """Runs the lifecycle every ``interval_s`` inside ``serve``; ``start()``/``shutdown()``."""

    def __init__(
        self,
        config: ReceiverConfig,
        consume_logs: Callable[[list[LogRecordData]], Awaitable[Any]],
        *,
        first_delay_s: float = 5.0,
    ) -> None:
        self.config = config
        self.consume_logs = consume_logs
        self.first_delay_s = first_delay_s
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.last: RunReport | None = None
        self._runner: LifecycleRunner | None = None
        self._lock = threading.Lock()
        self._running: asyncio.Future[RunReport] | None = None

    def start(self) -> None:
        """Start the schedule; a no-op when ``lifecycle.enabled`` is false or the records
        do not go to Elasticsearch (``consumer`` other than ``ingest``: nothing to manage,
        and nowhere to record what the lifecycle does)."""
        config = lifecycle_config_of(self.config)
        if config.enabled and self.config.consumer == "ingest" and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="lifecycle")

    async def run_once(self) -> RunReport:
        """One run now (in a worker thread)."""
        loop = asyncio.get_running_loop()
        if self._runner is None:
            self._runner = await asyncio.to_thread(
                build_runner,
                self.config,
                consumer_recorder(self.consume_logs, loop),
                progress=lambda m: _log.info("lifecycle", extra={"progress": m}),
            )
        runner: LifecycleRunner = self._runner

        def run() -> RunReport:
            with self._lock:
                return runner.run()

        self._running = asyncio.ensure_future(asyncio.to_thread(run))
        report = await asyncio.shield(self._running)
        self.last = report
        observe(report)
        _log.info(
            "lifecycle run",
            extra={
                "skipped": report.skipped or None,
                "days": [f"{d.day}:{d.action}" for d in report.days if d.action != "keep"],
                "errors": report.errors,
                "archived_days": report.archived_days,
            },
        )
        return report

    async def _loop(self) -> None:
        interval = lifecycle_config_of(self.config).interval_s
        delay = min(self.first_delay_s, interval)
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
                return
            except TimeoutError:
                pass
            try:
                await self.run_once()
            except Exception as exc:  # the next run tries again; never kill the receiver
                metrics.LIFECYCLE_RUNS.labels(outcome="error").inc()
                metrics.LIFECYCLE_ERRORS.inc()
                _log.exception("lifecycle run failed", extra={"error": str(exc)[:500]})
            delay = interval

    async def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop the schedule; a run in progress stops after its current step (waited for
        up to ``timeout_s``)."""
        self._stop.set()
        if self._runner is not None:
            self._runner.request_stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._running is not None and not self._running.done():
            # The run's thread finishes its current step; its client stays open until then.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._running), timeout_s)
        if self._runner is not None and (self._running is None or self._running.done()):
            self._runner.es.close()
