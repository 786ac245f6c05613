"""OTLP/HTTP: ``POST /v1/logs`` and ``POST /v1/traces`` (aiohttp), plus health and metrics.

Bodies are ``application/x-protobuf`` or ``application/json`` (parameters such as
``charset`` are fine; anything else is 415), plain or ``Content-Encoding: gzip``, with a
Content-Length or chunked. The body is read as a stream and held to ``max_request_bytes``
both as received and after decompression; decompression is bounded step by step, so a
gzip bomb is refused (413) after allocating at most the limit. The answer uses the
request's content type.

A request is authenticated from its headers before its body is read (401 without a valid
credential when one is required; see :mod:`receiver.identity`). The whole body must
arrive within ``limits.http_body_timeout_s`` (else 408 and the connection is closed); a
gzip body is inflated only once it has fully arrived, so a stalled upload holds just its
compressed bytes, and a large one is inflated in a worker thread, step by step, each step
charged to the in-flight budget. Before decoding, the request is also charged
``limits.decoded_bytes_per_wire_byte`` times its decompressed size.

``/healthz``, ``/readyz`` and ``/metrics`` are served here too (and on the admin listener
when one is configured).
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable

from aiohttp import web

from indexer.tls import peer_identity_names
from receiver import metrics
from receiver.errors import InvalidRequest, ReceiverError, RequestTooLarge, RetryableError
from receiver.identity import Unauthenticated, Writer, WriterRegistry, WritersConfig
from receiver.limits import LimitsConfig
from receiver.otlp.decode_traces import decode_traces_json, decode_traces_protobuf
from receiver.otlp.export import ExportHandler
from receiver.otlp.inflight import Reservation
from receiver.otlp.status import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROTOBUF,
    BodyTimeout,
    UnsupportedMediaType,
    http_error,
    logs_success,
    traces_success,
)

__all__ = ["build_admin_app", "build_otlp_app", "read_body"]

log = logging.getLogger("otel_audit.receiver.http")

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_INFLATE_STEP = 4 * 1024 * 1024


def _content_kind(request: web.Request) -> bool:
    """True for JSON, False for protobuf; UnsupportedMediaType otherwise."""
    media = request.content_type.lower()  # aiohttp strips parameters such as charset
    if media == CONTENT_TYPE_PROTOBUF:
        return False
    if media == CONTENT_TYPE_JSON:
        return True
    shown = request.headers.get("Content-Type", "(none)")[:100]
    raise UnsupportedMediaType(
        f"Content-Type {shown!r} is not supported: use application/x-protobuf or application/json"
    )


class _Gunzip:
    """Bounded streaming gzip decompression (several members allowed)."""

    def __init__(self, limit: int) -> None:
        self._room = limit
        self._limit = limit
        self._d = zlib.decompressobj(_GZIP_WBITS)
        self._fresh = True

    async def feed(
        self, data: bytes, out: list[bytes], reservation: Reservation, threaded: bool
    ) -> None:
        while data:
            if self._d.eof:
                self._d = zlib.decompressobj(_GZIP_WBITS)
            self._fresh = False
            step = min(self._room + 1, _INFLATE_STEP)
            try:
                if threaded:  # zlib releases the GIL: the event loop keeps serving
                    chunk = await asyncio.to_thread(self._d.decompress, data, step)
                else:
                    chunk = self._d.decompress(data, step)
            except zlib.error as exc:
                raise InvalidRequest(f"body is not valid gzip: {exc}") from None
            self._room -= len(chunk)
            if self._room < 0:
                raise RequestTooLarge(
                    f"decompressed body is over max_request_bytes ({self._limit})"
                )
            if chunk:
                reservation.add(len(chunk))
                out.append(chunk)
            data = self._d.unused_data if self._d.eof else self._d.unconsumed_tail

    def finish(self) -> None:
        if not self._fresh and not self._d.eof:
            raise InvalidRequest("gzip body is truncated")


async def read_body(
    request: web.Request,
    limit: int,
    reservation: Reservation,
    *,
    timeout_s: float | None = None,
    inflate_in_thread_bytes: int = 1024 * 1024,
) -> bytes:
    """The request body, decompressed, within ``limit`` bytes before and after; the wire
    bytes must all arrive within ``timeout_s`` (BodyTimeout otherwise)."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding[:40]!r} is not supported: use gzip or identity"
        )
    length = request.content_length
    if length is not None and length > limit:
        raise RequestTooLarge(f"body of {length} bytes is over max_request_bytes ({limit})")
    parts: list[bytes] = []
    received = 0
    stream = request.content
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                chunk = await stream.readany()
                if not chunk:
                    break
                received += len(chunk)
                if received > limit:
                    raise RequestTooLarge(f"body is over max_request_bytes ({limit})")
                reservation.add(len(chunk))
                parts.append(chunk)
    except TimeoutError:
        raise BodyTimeout(
            f"the body did not arrive within {timeout_s:g} s ({received} bytes received)"
        ) from None
    raw = parts[0] if len(parts) == 1 else b"".join(parts)
    if encoding not in ("gzip", "x-gzip"):
        return raw
    if received == 0:
        raise InvalidRequest("gzip body is empty")
    del parts
    gunzip = _Gunzip(limit)
    out: list[bytes] = []
    await gunzip.feed(raw, out, reservation, threaded=len(raw) >= inflate_in_thread_bytes)
    gunzip.finish()
    reservation.give(len(raw))  # the compressed body is dropped on return
    return out[0] if len(out) == 1 else b"".join(out)


def _cert_names(request: web.Request) -> list[str]:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return []
    return peer_identity_names(ssl_object.getpeercert())  # verified certificates only


class _OtlpRoutes:
    def __init__(
        self,
        handler: ExportHandler,
        max_request_bytes: int,
        registry: WriterRegistry,
        limits: LimitsConfig,
    ) -> None:
        self.handler = handler
        self.max_request_bytes = max_request_bytes
        self.registry = registry
        self.limits = limits
        self.factor = limits.decoded_bytes_per_wire_byte

    def _writer(self, request: web.Request) -> Writer | None:
        registry = self.registry
        if not registry.enabled:
            return None
        authorization = request.headers.get("Authorization")
        names = _cert_names(request) if authorization is None else []
        return registry.authenticate(authorization, names)

    async def logs(self, request: web.Request) -> web.Response:
        return await self._export(request, "logs")

    async def traces(self, request: web.Request) -> web.Response:
        return await self._export(request, "traces")

    async def _export(self, request: web.Request, signal: str) -> web.Response:
        started = time.perf_counter()
        is_json = True
        status = 200
        handler = self.handler
        try:
            is_json = _content_kind(request)
            writer = self._writer(request)
            handler.begin()
            try:
                with handler.budget.reserve() as reservation:
                    body = await read_body(
                        request,
                        self.max_request_bytes,
                        reservation,
                        timeout_s=self.limits.http_body_timeout_s,
                        inflate_in_thread_bytes=self.limits.inflate_in_thread_bytes,
                    )
                    # At most the whole budget in all: a request of the maximum size still
                    # runs (alone) instead of being pushed back for ever.
                    room = handler.budget.limit_bytes - reservation.held_bytes
                    reservation.add(max(0, min(int(len(body) * self.factor), room)))
                    if signal == "logs":
                        decoded = await handler.decode_logs_off_loop(
                            body, json=is_json, writer=writer
                        )
                        del body
                        rejected, message = await handler.export_logs(decoded, writer)
                        payload = logs_success(rejected, message, json=is_json)
                    else:
                        spans = (decode_traces_json if is_json else decode_traces_protobuf)(body)
                        del body
                        rejected, message = await handler.export_spans(spans)
                        payload = traces_success(rejected, message, json=is_json)
            finally:
                handler.end()
            response = web.Response(
                body=payload,
                content_type=CONTENT_TYPE_JSON if is_json else CONTENT_TYPE_PROTOBUF,
            )
        except Exception as exc:
            answer = http_error(exc, json=is_json)
            status = answer.status
            _log_failure(exc, status, signal)
            response = web.Response(
                status=answer.status,
                body=answer.body,
                headers=answer.headers,
                content_type=answer.content_type,
            )
            if isinstance(exc, Unauthenticated):
                response.headers["WWW-Authenticate"] = 'Bearer realm="otel-audit"'
            if isinstance(exc, (BodyTimeout, Unauthenticated, RequestTooLarge)):
                response.force_close()  # the rest of the body is not worth reading
        metrics.REQUESTS.labels("http", signal, str(status)).inc()
        metrics.REQUEST_DURATION.labels("http", signal).observe(time.perf_counter() - started)
        return response


def _log_failure(exc: BaseException, status: int, signal: str) -> None:
    fields = {"status": status, "signal": signal, "error": str(exc)[:200]}
    if isinstance(exc, ReceiverError):
        level = logging.WARNING if isinstance(exc, RetryableError) else logging.INFO
        log.log(level, "export refused", extra=fields)
    else:
        log.error("export failed", exc_info=exc, extra=fields)


class _HealthRoutes:
    def __init__(self, ready: Callable[[], bool]) -> None:
        self.ready = ready

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": metrics.CONTENT_TYPE})


def _add_health(app: web.Application, ready: Callable[[], bool]) -> None:
    health = _HealthRoutes(ready)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)


def build_otlp_app(
    handler: ExportHandler,
    *,
    max_request_bytes: int,
    ready: Callable[[], bool],
    traces: bool = True,
    registry: WriterRegistry | None = None,
    limits: LimitsConfig | None = None,
) -> web.Application:
    """The OTLP/HTTP application (logs, traces when a span consumer exists, health)."""
    app = web.Application()
    routes = _OtlpRoutes(
        handler,
        max_request_bytes,
        registry or WriterRegistry(WritersConfig()),
        limits or LimitsConfig(),
    )
    app.router.add_post("/v1/logs", routes.logs)
    if traces:
        app.router.add_post("/v1/traces", routes.traces)
    _add_health(app, ready)
    return app


def build_admin_app(ready: Callable[[], bool]) -> web.Application:
    """Health and metrics only, for a separate admin listener."""
    app = web.Application()
    _add_health(app, ready)
    return app
