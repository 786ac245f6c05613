"""OTLP/gRPC: ``LogsService/Export`` and ``TraceService/Export`` on grpc.aio.

The handlers take the raw request bytes (no deserializer) so that the in-flight budget
is charged before decoding and a body that does not parse is INVALID_ARGUMENT rather than
gRPC's generic INTERNAL. gRPC itself refuses messages over ``max_request_bytes``
(RESOURCE_EXHAUSTED) and decompresses gzip requests. Errors map through
:mod:`receiver.otlp.status`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc

from receiver import metrics
from receiver.errors import ReceiverError, RetryableError
from receiver.otlp.decode_traces import decode_traces_protobuf
from receiver.otlp.export import ExportHandler
from receiver.otlp.status import grpc_error, logs_success, traces_success

__all__ = ["LOGS_SERVICE", "TRACE_SERVICE", "build_grpc_server"]

log = logging.getLogger("otel_audit.receiver.grpc")

LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


class _Services:
    def __init__(self, handler: ExportHandler) -> None:
        self.handler = handler

    async def export_logs(self, body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return await self._export(body, context, "logs")

    async def export_traces(
        self, body: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        return await self._export(body, context, "traces")

    async def _export(
        self, body: bytes, context: grpc.aio.ServicerContext[Any, Any], signal: str
    ) -> bytes:
        started = time.perf_counter()
        handler = self.handler
        try:
            handler.begin()
            try:
                with handler.budget.reserve() as reservation:
                    reservation.add(len(body))
                    if signal == "logs":
                        decoded = handler.decode_logs(body)
                        del body
                        rejected, message = await handler.export_logs(decoded)
                        payload = logs_success(rejected, message, json=False)
                    else:
                        spans = decode_traces_protobuf(body)
                        del body
                        rejected, message = await handler.export_spans(spans)
                        payload = traces_success(rejected, message, json=False)
            finally:
                handler.end()
        except Exception as exc:
            answer = grpc_error(exc)
            _log_failure(exc, answer.code, signal)
            metrics.REQUESTS.labels("grpc", signal, answer.code.name).inc()
            metrics.REQUEST_DURATION.labels("grpc", signal).observe(time.perf_counter() - started)
            await context.abort(answer.code, answer.message, answer.trailing_metadata)
        metrics.REQUESTS.labels("grpc", signal, "OK").inc()
        metrics.REQUEST_DURATION.labels("grpc", signal).observe(time.perf_counter() - started)
        return payload


def _log_failure(exc: BaseException, code: grpc.StatusCode, signal: str) -> None:
    fields = {"grpc_code": code.name, "signal": signal, "error": str(exc)[:200]}
    if isinstance(exc, ReceiverError):
        level = logging.WARNING if isinstance(exc, RetryableError) else logging.INFO
        log.log(level, "export refused", extra=fields)
    else:
        log.error("export failed", exc_info=exc, extra=fields)


def build_grpc_server(
    handler: ExportHandler, *, max_request_bytes: int, traces: bool = True
) -> grpc.aio.Server:
    """A grpc.aio server with the OTLP services registered (not yet bound or started)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ]
    )
    services = _Services(handler)
    handlers = [
        grpc.method_handlers_generic_handler(
            LOGS_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(services.export_logs)}
        )
    ]
    if traces:
        handlers.append(
            grpc.method_handlers_generic_handler(
                TRACE_SERVICE,
                {"Export": grpc.unary_unary_rpc_method_handler(services.export_traces)},
            )
        )
    server.add_generic_rpc_handlers(handlers)
    return server
