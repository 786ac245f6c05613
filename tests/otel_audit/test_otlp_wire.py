"""Events emitted with the helper reach the wire intact through the SDK's real OTLP exporters.

A minimal in-test OTLP server (gRPC LogsService and HTTP /v1/logs) decodes what the
OpenTelemetry Python SDK's OTLPLogExporter sends through a BatchLogRecordProcessor.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider

from otel_audit import AuditLogger, _logs_compat
from otel_audit.schema import load_schema

SCHEMA = load_schema()


class Received:
    """Log records decoded from every export request, with their resource attributes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[tuple[dict[str, Any], Any]] = []

    def add(self, request: Any) -> None:
        with self.lock:
            for rl in request.resource_logs:
                resource = {kv.key: _value(kv.value) for kv in rl.resource.attributes}
                for sl in rl.scope_logs:
                    for lr in sl.log_records:
                        self.records.append((resource, lr))


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


class LogsServicer(logs_service_pb2_grpc.LogsServiceServicer):  # type: ignore[misc]
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(self, request: Any, context: Any) -> Any:
        self.received.add(request)
        return logs_service_pb2.ExportLogsServiceResponse()


@pytest.fixture
def grpc_endpoint() -> Iterator[tuple[str, Received]]:
    received = Received()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(LogsServicer(received), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", received
    finally:
        server.stop(grace=None)


@pytest.fixture
def http_endpoint() -> Iterator[tuple[str, Received]]:
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/logs" or "protobuf" not in self.headers.get("Content-Type", ""):
                self.send_response(400)
                self.end_headers()
                return
            request = logs_service_pb2.ExportLogsServiceRequest()
            request.ParseFromString(body)
            received.add(request)
            payload = logs_service_pb2.ExportLogsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/logs", received
    finally:
        server.shutdown()
        server.server_close()


def _emit_through(exporter: Any) -> tuple[list[tuple[str, str, str]], Any]:
    """Emit three events inside spans through a batching provider; return what was expected."""
    provider = _logs_compat.sdk_logger_provider(
        {"service.name": "billing", "service.version": "1.2.3"}
    )
    provider.add_log_record_processor(
        _logs_compat.batch_processor(exporter, schedule_delay_millis=50)
    )
    audit = AuditLogger(provider)
    tracer = TracerProvider().get_tracer("test")
    expected: list[tuple[str, str, str]] = []
    for outcome in ("success", "denied", "failure"):
        with tracer.start_as_current_span(f"op-{outcome}") as span:
            ctx = span.get_span_context()
            event_id = audit.emit(
                action="invoice.update",
                category="data_change",
                outcome=outcome,
                actor_id="u-1",
                actor_type="user",
                resource_type="invoice",
                resource_id="inv-1",
                client_address="203.0.113.7",
                **{"order.lines": 3},
            )
            expected.append((event_id, f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"))
    assert provider.force_flush(10_000)
    return expected, provider


def _check(received: Received, expected: list[tuple[str, str, str]]) -> None:
    assert len(received.records) == 3
    by_id = {}
    for resource, lr in received.records:
        attrs = {kv.key: _value(kv.value) for kv in lr.attributes}
        by_id[attrs["audit.event.id"]] = (resource, lr, attrs)
    assert len(by_id) == 3  # distinct ids
    for event_id, trace_id, span_id in expected:
        resource, lr, attrs = by_id[event_id]
        u = uuid.UUID(event_id)
        assert u.version == 7 and u.variant == uuid.RFC_4122
        assert lr.trace_id.hex() == trace_id
        assert lr.span_id.hex() == span_id
        assert resource["service.name"] == "billing"
        assert resource["service.version"] == "1.2.3"
        assert attrs["audit.action"] == "invoice.update"
        assert attrs["audit.category"] == "data_change"
        assert attrs["audit.actor.id"] == "u-1"
        assert attrs["audit.actor.type"] == "user"
        assert attrs["audit.resource.type"] == "invoice"
        assert attrs["audit.resource.id"] == "inv-1"
        assert attrs["client.address"] == "203.0.113.7"
        assert attrs["order.lines"] == 3
        outcome = attrs["audit.outcome"]
        assert lr.severity_number == SCHEMA.severity[outcome]
        assert lr.severity_text == ("INFO" if outcome == "success" else "WARN")
        assert lr.event_name == "invoice.update"
        assert lr.body.string_value == f"user u-1 invoice.update invoice/inv-1: {outcome}"
        assert lr.time_unix_nano > 0
        assert u.int >> 80 == lr.time_unix_nano // 1_000_000  # id minted at the event time


def test_grpc_exporter(grpc_endpoint: tuple[str, Received]) -> None:
    endpoint, received = grpc_endpoint
    expected, provider = _emit_through(GrpcLogExporter(endpoint=endpoint, insecure=True))
    try:
        _check(received, expected)
    finally:
        provider.shutdown()


def test_http_exporter(http_endpoint: tuple[str, Received]) -> None:
    endpoint, received = http_endpoint
    expected, provider = _emit_through(HttpLogExporter(endpoint=endpoint))
    try:
        _check(received, expected)
    finally:
        provider.shutdown()
