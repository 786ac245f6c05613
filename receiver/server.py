"""Assemble the receiver: consumers, the gRPC and HTTP servers, and their lifecycle.

``start()`` starts the consumer (its optional ``start()``), then binds the listeners.
``shutdown(timeout_s)`` is idempotent: it stops accepting requests (new RPCs are refused,
the listening sockets close, requests on kept-alive connections get a retryable 503),
waits for the requests in progress to finish, then calls the consumer's optional
``shutdown(timeout_s)`` so that it flushes, all within ``timeout_s``. :func:`serve` runs
until SIGTERM or SIGINT and returns the process exit code (0 after a clean shutdown).

The consumer comes from ``config.consumer``: ``ingest``
(``receiver.ingest.consumer.build_consumer``, imported lazily), ``null_sink``/``discard``
(:mod:`receiver.ingest.null_sink`) or
``package.module:factory``. Spans go to ``config.spans_consumer`` likewise (``default`` is
``receiver.spans.build_spans_consumer`` when present; ``none`` turns traces off).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import inspect
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import grpc
from aiohttp import web

from indexer.tls import ServerTls, serve_tls_of
from otel_audit.exits import Exit
from receiver import native
from receiver.config import ReceiverConfig, parse_endpoint
from receiver.identity import WriterRegistry, WritersConfig
from receiver.limits import LimitsConfig
from receiver.otlp.export import ExportHandler, SpansSink, optional_method
from receiver.otlp.grpc import build_grpc_server
from receiver.otlp.http import build_admin_app, build_otlp_app
from receiver.otlp.inflight import ByteBudget
from receiver.pipeline import LogsConsumer

__all__ = ["ReceiverServer", "build_logs_consumer", "build_spans_consumer", "serve"]

log = logging.getLogger("otel_audit.receiver")

_GC_THRESHOLDS = (10_000, 20, 20)
"""Collector thresholds while serving: a request holds thousands of containers (decoded
records, documents) until it is answered, so Python's default (700, 10, 10) would collect,
and scan them, several times per request."""


def _ingest(config: ReceiverConfig) -> LogsConsumer:
    from receiver.ingest.consumer import build_consumer

    return build_consumer(config)


def _null_sink(config: ReceiverConfig) -> Any:
    from receiver.ingest.null_sink import build_null_sink

    return build_null_sink(config)


def _discard(config: ReceiverConfig) -> Any:
    from receiver.ingest.null_sink import build_discard_sink

    return build_discard_sink(config)


def _span_store(config: ReceiverConfig) -> SpansSink:
    from receiver.spans import build_spans_consumer as build_span_store

    return build_span_store(config)


# Built-in consumers by config name; anything else is a user's ``package.module:factory``.
_LOGS_FACTORIES: dict[str, Callable[[ReceiverConfig], Any]] = {
    "ingest": _ingest,
    "null_sink": _null_sink,
    "discard": _discard,
}
_SPANS_FACTORIES: dict[str, Callable[[ReceiverConfig], Any]] = {
    "default": _span_store,
    "null_sink": _null_sink,
    "discard": _discard,
}


def _load_factory(spec: str, key: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{key}: {spec!r} is not a known name or package.module:factory")
    module = importlib.import_module(module_name)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{key}: {module_name} has no callable {attr}")
    return factory


def build_logs_consumer(config: ReceiverConfig) -> LogsConsumer:
    """The log records consumer named by ``config.consumer``."""
    factory = _LOGS_FACTORIES.get(config.consumer) or _load_factory(config.consumer, "consumer")
    consumer: LogsConsumer = factory(config)
    return consumer


def build_spans_consumer(config: ReceiverConfig, logs_consumer: Any = None) -> SpansSink | None:
    """The spans consumer named by ``config.spans_consumer`` (None: traces off)."""
    name = config.spans_consumer
    if name == "none":
        return None
    if name in ("null_sink", "discard") and hasattr(logs_consumer, "consume_spans"):
        return logs_consumer  # type: ignore[no-any-return]
    factory = _SPANS_FACTORIES.get(name) or _load_factory(name, "spans_consumer")
    sink: SpansSink = factory(config)
    return sink


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _grpc_address(endpoint: str) -> str:
    host, port = parse_endpoint(endpoint)
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"


class ReceiverServer:
    """The OTLP servers around one logs consumer (and an optional spans consumer)."""

    def __init__(
        self,
        config: ReceiverConfig,
        logs_consumer: LogsConsumer,
        spans_consumer: SpansSink | None = None,
    ) -> None:
        self.config = config
        self.logs_consumer = logs_consumer
        self.spans_consumer = spans_consumer
        self.budget = ByteBudget(config.max_inflight_bytes, config.overload_retry_after_s)
        sections = config.sections
        writers = sections.get("writers")
        limits = sections.get("limits")
        self.registry = WriterRegistry(
            writers if isinstance(writers, WritersConfig) else WritersConfig()
        )
        self.limits = limits if isinstance(limits, LimitsConfig) else LimitsConfig()
        self.handler = ExportHandler(
            logs_consumer,
            spans_consumer,
            self.budget,
            decode_in_thread_bytes=self.limits.decode_in_thread_bytes,
        )
        self.tls: ServerTls | None = serve_tls_of(config)
        self._tls_reload: asyncio.Task[None] | None = None
        self.grpc_port = 0
        self.http_port = 0
        self.admin_port = 0
        self._grpc: grpc.aio.Server | None = None
        self._runners: list[web.AppRunner] = []
        self._started = False
        self._shutdown_task: asyncio.Task[None] | None = None
        self.readiness_checks: list[Callable[[], bool]] = []
        """Further conditions for ``/readyz`` (the scheduled verify's :meth:`ready`)."""

    def ready(self) -> bool:
        """Ready for traffic: started, not draining, and the consumer says it can store."""
        if not self._started or self.handler.draining:
            return False
        if not all(check() for check in self.readiness_checks):
            return False
        probe = optional_method(self.logs_consumer, "ready")
        if probe is None:
            return True
        try:
            return bool(probe())
        except Exception:
            log.exception("consumer readiness probe failed")
            return False

    def sealing_stuck(self) -> tuple[bool, str]:
        """``(True, why)`` when the logs consumer's sealer is stuck (for ``/readyz``)."""
        probe = optional_method(self.logs_consumer, "sealing_stuck")
        if probe is None:
            return False, ""
        try:
            stuck, why = probe()
        except Exception as exc:
            log.exception("sealing probe failed")
            return True, f"the sealing probe failed: {exc}"
        return bool(stuck), str(why)

    async def start(self) -> None:
        """Start the consumers, then listen."""
        config = self.config
        for consumer in {id(c): c for c in (self.logs_consumer, self.spans_consumer) if c}.values():
            starter = optional_method(consumer, "start")
            if starter is not None:
                await _maybe_await(starter())
        traces = self.spans_consumer is not None
        self._grpc = build_grpc_server(
            self.handler,
            max_request_bytes=config.max_request_bytes,
            traces=traces,
            registry=self.registry,
            limits=self.limits,
        )
        address = _grpc_address(config.grpc_endpoint)
        if self.tls is not None:
            self.grpc_port = self._grpc.add_secure_port(address, self.tls.grpc_credentials())
            self._tls_reload = asyncio.ensure_future(self.tls.reload_forever())
        else:
            self.grpc_port = self._grpc.add_insecure_port(address)
        await self._grpc.start()

        app = build_otlp_app(
            self.handler,
            max_request_bytes=config.max_request_bytes,
            ready=self.ready,
            traces=traces,
            registry=self.registry,
            limits=self.limits,
        )
        self.http_port = await self._serve_app(app, config.http_endpoint, tls=self.tls is not None)
        if config.admin_endpoint:
            self.admin_port = await self._serve_app(
                build_admin_app(self.ready), config.admin_endpoint
            )
        self._started = True
        log.info(
            "receiver listening",
            extra={
                "grpc": f"{config.grpc_endpoint.rpartition(':')[0]}:{self.grpc_port}",
                "http": f"{config.http_endpoint.rpartition(':')[0]}:{self.http_port}",
                "admin_port": self.admin_port or None,
                "traces": traces,
                "tls": self.tls is not None,
                "client_auth": self.tls.config.client_auth if self.tls else "none",
                "writers_required": self.registry.required,
                "consumer": config.consumer,
                "logs_decoder": native.DESCRIPTION,
                # Whether the decoder prepares plain records' writes (receiver.ingest.prepare).
                "native_prepare": getattr(self.logs_consumer, "native_plan", None) is not None,
            },
        )

    async def _serve_app(self, app: web.Application, endpoint: str, *, tls: bool = False) -> int:
        host, port = parse_endpoint(endpoint)
        runner = web.AppRunner(
            app,
            auto_decompress=False,  # decompressed by read_body, within max_request_bytes
            access_log=None,
            shutdown_timeout=self.config.shutdown_timeout_s,
            keepalive_timeout=self.limits.http_idle_timeout_s,
        )
        await runner.setup()
        ssl_context = self.tls.ssl_context if tls and self.tls is not None else None
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        self._runners.append(runner)
        return int(site.port)

    async def shutdown(self, timeout_s: float | None = None) -> None:
        """Stop listening, drain in-flight requests, flush the consumer (idempotent)."""
        if self._shutdown_task is None:
            budget = self.config.shutdown_timeout_s if timeout_s is None else timeout_s
            self._shutdown_task = asyncio.ensure_future(self._shutdown(budget))
        await asyncio.shield(self._shutdown_task)

    async def _shutdown(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        self.handler.draining = True
        if self._tls_reload is not None:
            self._tls_reload.cancel()
        log.info("receiver shutting down", extra={"in_flight": self.handler.active})
        grpc_stop = asyncio.ensure_future(self._grpc.stop(grace=timeout_s)) if self._grpc else None
        http_stops = [asyncio.ensure_future(r.cleanup()) for r in self._runners]
        drained = await self.handler.wait_idle(deadline - time.monotonic())
        if not drained:
            log.warning(
                "shutdown timeout: requests still in progress",
                extra={"in_flight": self.handler.active},
            )
        pending = [t for t in (grpc_stop, *http_stops) if t is not None]
        if pending:
            _done, not_done = await asyncio.wait(
                pending, timeout=max(0.1, deadline - time.monotonic())
            )
            for task in not_done:
                task.cancel()
        for consumer in {id(c): c for c in (self.logs_consumer, self.spans_consumer) if c}.values():
            stopper = optional_method(consumer, "shutdown")
            if stopper is not None:
                try:
                    await _maybe_await(stopper(max(0.1, deadline - time.monotonic())))
                except Exception:
                    log.exception("consumer shutdown failed")
        self._started = False
        log.info("receiver stopped", extra={"drained": drained})


def _chain_page_sources(config: ReceiverConfig, watch: Any) -> dict[str, Any]:
    """The console chain page's ``scheduled_verify`` and ``witness`` sources (None: off)."""
    from receiver import metrics

    def verify_status() -> dict[str, Any]:
        done = watch.last_completed  # on time.monotonic, VerifySchedule's clock
        findings = watch.last_findings
        return {
            "interval_s": watch.watch.interval_s,
            "completed_ms": None
            if done is None
            else int((time.time() - (time.monotonic() - done)) * 1000),
            "duration_s": None
            if done is None
            else metrics.REGISTRY.get_sample_value(
                "otel_audit_receiver_verify_last_duration_seconds"
            ),
            "events_checked": None
            if done is None
            else metrics.REGISTRY.get_sample_value(
                "otel_audit_receiver_verify_last_events_checked"
            ),
            "findings": None if findings is None else dict(findings),
            "stale": watch.stale(),
        }

    out: dict[str, Any] = {"scheduled_verify": None, "witness": None}
    if watch.watch.enabled and config.consumer == "ingest":
        out["scheduled_verify"] = verify_status
    from receiver.lifecycle import integrity_config_of, keyring_of

    integrity = integrity_config_of(config)
    location = integrity.checkpoint_dir.removeprefix("dir:")
    if config.consumer == "ingest" and integrity.enabled and ":" not in location:
        from pathlib import Path

        from indexer.query.console import WitnessView
        from otel_audit.integrity.note import CosignatureVerifier, parse_vkey

        try:
            keyring = keyring_of(config)
        except Exception as exc:  # the sealer reports a missing key itself
            log.warning("chain page: no witness view", extra={"error": str(exc)[:300]})
            return out
        verifiers = [parse_vkey(v) for v in watch.watch.witness_keys]  # checked by validate()
        out["witness"] = WitnessView(
            Path(location),
            keyring,
            [v for v in verifiers if isinstance(v, CosignatureVerifier)],
        )
    return out


async def serve(config: ReceiverConfig) -> int:
    """Run the receiver until SIGTERM/SIGINT; the process exit code."""
    logs_consumer = build_logs_consumer(config)
    spans_consumer = build_spans_consumer(config, logs_consumer)
    server = ReceiverServer(config, logs_consumer, spans_consumer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tls = server.tls
    if tls is not None:  # SIGHUP: reload the certificate files now
        loop.add_signal_handler(signal.SIGHUP, tls.reload)
    try:
        await server.start()
        # Verify on a schedule; tampering, a stale chain or stuck sealing: /readyz unready.
        from receiver.watch import VerifySchedule

        watch = VerifySchedule(config, server.sealing_stuck)
        # The query API records each query through the same consumer, in process; its
        # chain page shows the watcher's last run and the stored witness cosignatures.
        from indexer.query.api import start_query_api

        query_api = await start_query_api(
            config,
            logs_consumer.consume_logs,
            ssl_context=tls.ssl_context if tls else None,
            **_chain_page_sources(config, watch),
        )
        # Archive, retention and holds on a schedule; one receiver at a time (a lease).
        from receiver.lifecycle import LifecycleSchedule

        lifecycle = LifecycleSchedule(config, logs_consumer.consume_logs)
        lifecycle.start()
        server.readiness_checks.append(watch.ready)
        watch.start()
        # What exists after startup lives as long as the process: keep it out of every
        # later collection, and collect less often (about 2 us of CPU per event less).
        gc.freeze()
        gc.set_threshold(*_GC_THRESHOLDS)
    except Exception:
        log.exception("receiver failed to start")
        await server.shutdown(min(5.0, config.shutdown_timeout_s))
        return Exit.UNAVAILABLE
    await stop.wait()
    await watch.shutdown()
    await lifecycle.shutdown()
    await query_api.cleanup()
    await server.shutdown(config.shutdown_timeout_s)
    return 0
