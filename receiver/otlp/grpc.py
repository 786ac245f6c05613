"""OTLP/gRPC: ``LogsService/Export`` and ``TraceService/Export`` on grpc.aio.

Export is unary on the wire but registered here as a ``stream_unary`` handler, so that it
runs as soon as a call's headers arrive instead of after gRPC has received the whole
message (a unary client sends one message and half-closes: nothing differs for it). In
that order, a call is

1. authenticated from its metadata (:class:`receiver.identity.WriterRegistry`: the
   ``authorization`` metadata, else the verified client certificate's names); without a
   valid credential it is refused UNAUTHENTICATED and its message is never read;
2. given one of ``limits.max_concurrent_grpc_calls`` call slots; when all are taken it is
   refused RESOURCE_EXHAUSTED with a ``google.rpc.RetryInfo`` delay (the Collector's OTLP
   exporter retries RESOURCE_EXHAUSTED only when RetryInfo is present; the same answer
   as an overdrawn in-flight budget, so a client sees one kind of "busy, retry later");
3. given ``limits.grpc_message_timeout_s`` to deliver its one message and half-close;
   past it the call is answered DEADLINE_EXCEEDED and its slot is freed, so a client
   that opens calls and never sends their message holds no slot for long. A second
   message is INVALID_ARGUMENT;
4. charged its message size times ``1 + limits.decoded_bytes_per_wire_byte`` against the
   in-flight budget, then decoded and consumed.

The handlers take the raw request bytes (no deserializer) so that a body that does not
parse is INVALID_ARGUMENT rather than gRPC's generic INTERNAL. gRPC itself refuses
messages over ``max_request_bytes`` (RESOURCE_EXHAUSTED) and decompresses gzip requests.
Errors map through :mod:`receiver.otlp.status`. gRPC's own concurrent-call cap is not set:
its refusal carries no RetryInfo (a Collector drops the batch), and it was reached when a
burst piled up calls faster than the handler refused them; every refusal is the
handler's. Idle connections are closed after ``limits.grpc_idle_timeout_s``.

Large calls (a message of at least ``limits.decode_in_thread_bytes``) are a size class of
their own: at most ``limits.max_concurrent_large_grpc_calls`` are held at once, more are
refused as soon as their message is read, and they are decoded one at a time off the event
loop, so a burst of them neither takes every call slot nor the event loop from the small
calls of a normal exporter.
The HTTP/2 flow-control window stays at its initial 64 KiB per call unless
``limits.grpc_window_autotune``: with the window grown by BDP probing, gRPC took in
megabytes of every call waiting for a slot or about to be refused (a burst of 100 calls
of 2.9 MB drove the peak RSS from 230 to 470 MiB).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from receiver import metrics
from receiver.errors import InvalidRequest, Overloaded, ReceiverError, RetryableError
from receiver.identity import Writer, WriterRegistry, WritersConfig, header_value
from receiver.limits import LimitsConfig
from receiver.otlp.decode_traces import decode_traces_protobuf
from receiver.otlp.export import ExportHandler
from receiver.otlp.status import BodyTimeout, grpc_error, logs_success, traces_success

__all__ = ["LOGS_SERVICE", "TRACE_SERVICE", "build_grpc_server"]

log = logging.getLogger("otel_audit.receiver.grpc")

LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def _cert_names(context: grpc.aio.ServicerContext[Any, Any]) -> list[str]:
    """Names of the verified client certificate, labelled as receiver.identity expects."""
    auth = context.auth_context()
    names = [f"CN={v.decode('utf-8', 'replace')}" for v in auth.get("x509_common_name", ())]
    for raw in auth.get("x509_subject_alternative_name", ()):
        value = raw.decode("utf-8", "replace")
        if "://" in value or value.startswith("spiffe:"):
            names.append(f"URI:{value}")
        elif "@" in value:
            names.append(f"email:{value}")
        else:
            names.append(f"DNS:{value}")
    return names


class _Services:
    def __init__(
        self, handler: ExportHandler, registry: WriterRegistry, limits: LimitsConfig
    ) -> None:
        self.handler = handler
        self.registry = registry
        self.factor = 1.0 + limits.decoded_bytes_per_wire_byte
        self.large_bytes = limits.decode_in_thread_bytes or LimitsConfig().decode_in_thread_bytes
        self.max_large = limits.max_concurrent_large_grpc_calls
        self.large = 0
        self.max_calls = limits.max_concurrent_grpc_calls
        self.calls = 0
        self.message_timeout_s = limits.grpc_message_timeout_s

    def _writer(self, context: grpc.aio.ServicerContext[Any, Any]) -> Writer | None:
        registry = self.registry
        if not registry.enabled:
            return None
        authorization = header_value(context.invocation_metadata() or (), "authorization")
        names = _cert_names(context) if authorization is None else []
        return registry.authenticate(authorization, names)

    async def export_logs(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        return await self._export(context, "logs")

    async def export_traces(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        return await self._export(context, "traces")

    async def _read_message(self, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        """The call's one request message, then its half-close, within the timeout."""
        timeout_s = self.message_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                body = await context.read()
                if body is grpc.aio.EOF:
                    raise InvalidRequest("the call ended without its request message")
                after = await context.read()
        except TimeoutError:
            raise BodyTimeout(
                f"the request message did not arrive within {timeout_s:g} s"
            ) from None
        if after is not grpc.aio.EOF:
            raise InvalidRequest("one request message per call: Export is unary")
        assert isinstance(body, bytes)
        return body

    async def _export(self, context: grpc.aio.ServicerContext[Any, Any], signal: str) -> bytes:
        started = time.perf_counter()
        handler = self.handler
        slot = False
        try:
            writer = self._writer(context)
            if self.calls >= self.max_calls:
                raise Overloaded(
                    f"receiver is busy: {self.calls} calls in progress; retry later",
                    handler.budget.retry_after_s,
                )
            self.calls += 1
            slot = True
            body = await self._read_message(context)
            large = len(body) >= self.large_bytes
            if large and self.large >= self.max_large:
                raise Overloaded(
                    f"receiver is busy: {self.large} large calls in progress; retry later",
                    handler.budget.retry_after_s,
                )
            handler.begin()
            self.large += int(large)
            try:
                with handler.budget.reserve() as reservation:
                    # At most the whole budget: a request of the maximum size still runs
                    # (alone) instead of being pushed back for ever.
                    reservation.add(min(int(len(body) * self.factor), handler.budget.limit_bytes))
                    if signal == "logs":
                        decoded = await handler.decode_logs_off_loop(body, writer=writer)
                        del body
                        rejected, message = await handler.export_logs(decoded, writer)
                        payload = logs_success(rejected, message, json=False)
                    else:
                        spans = decode_traces_protobuf(body)
                        del body
                        rejected, message = await handler.export_spans(spans)
                        payload = traces_success(rejected, message, json=False)
            finally:
                self.large -= int(large)
                handler.end()
        except Exception as exc:
            answer = grpc_error(exc)
            _log_failure(exc, answer.code, signal)
            metrics.REQUESTS.labels("grpc", signal, answer.code.name).inc()
            metrics.REQUEST_DURATION.labels("grpc", signal).observe(time.perf_counter() - started)
            await context.abort(answer.code, answer.message, answer.trailing_metadata)
        finally:
            if slot:
                self.calls -= 1
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
    handler: ExportHandler,
    *,
    max_request_bytes: int,
    traces: bool = True,
    registry: WriterRegistry | None = None,
    limits: LimitsConfig | None = None,
) -> grpc.aio.Server:
    """A grpc.aio server with the OTLP services registered (not yet bound or started)."""
    limits = limits or LimitsConfig()
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.max_connection_idle_ms", int(limits.grpc_idle_timeout_s * 1000)),
            ("grpc.http2.bdp_probe", int(limits.grpc_window_autotune)),
        ],
    )
    services = _Services(handler, registry or WriterRegistry(WritersConfig()), limits)
    handlers = [
        grpc.method_handlers_generic_handler(
            LOGS_SERVICE, {"Export": grpc.stream_unary_rpc_method_handler(services.export_logs)}
        )
    ]
    if traces:
        handlers.append(
            grpc.method_handlers_generic_handler(
                TRACE_SERVICE,
                {"Export": grpc.stream_unary_rpc_method_handler(services.export_traces)},
            )
        )
    server.add_generic_rpc_handlers(handlers)
    return server
