"""OTLP/HTTP server: content types, encodings, limits, error answers, real SDK exporters."""

from __future__ import annotations

import gzip
import threading
import time

import orjson
import pytest
import requests
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_audit import _logs_compat
from otel_audit.emit import AuditLogger
from receiver.config import ReceiverConfig
from receiver.errors import Overloaded, Unavailable
from receiver.limits import LimitsConfig
from tests.support.front_harness import (
    CapturingConsumer,
    LiveReceiver,
    audit_attributes,
    deeply_nested_logs_body,
    front_config,
    logs_request,
    running_receiver,
    traces_request,
)

PB = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


def _post(
    live: LiveReceiver, body: bytes, headers: dict[str, str], path: str = "/v1/logs"
) -> requests.Response:
    return requests.post(live.http_url + path, data=body, headers=headers, timeout=10)


def _status(response: requests.Response) -> status_pb2.Status:
    assert response.headers["Content-Type"].startswith("application/x-protobuf")
    status = status_pb2.Status()
    status.ParseFromString(response.content)
    return status


def test_protobuf_export_reaches_the_consumer(
    live: LiveReceiver, consumer: CapturingConsumer
) -> None:
    response = _post(live, logs_request(3).SerializeToString(), PB)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/x-protobuf")
    answer = ExportLogsServiceResponse()
    answer.ParseFromString(response.content)
    assert not answer.HasField("partial_success")
    assert [r.attributes["audit.actor.id"] for r in consumer.records] == [
        "user-0",
        "user-1",
        "user-2",
    ]


def test_partial_success_merges_consumer_and_decode_rejections(
    live: LiveReceiver, consumer: CapturingConsumer
) -> None:
    request = logs_request(
        [audit_attributes(0), audit_attributes(1, audit__action="bad.action"), audit_attributes(2)]
    )
    request.resource_logs[0].scope_logs[0].log_records[2].span_id = b"\x01\x02"
    response = _post(live, request.SerializeToString(), PB)
    assert response.status_code == 200
    answer = ExportLogsServiceResponse()
    answer.ParseFromString(response.content)
    assert answer.partial_success.rejected_log_records == 2
    message = answer.partial_success.error_message
    assert "audit.action: bad" in message and "span_id must be 8 bytes, got 2" in message
    assert len(consumer.records) == 1
    assert [r.attributes["audit.actor.id"] for r in consumer.rejected] == ["user-2"]
    assert consumer.reasons == ["span_id must be 8 bytes, got 2"]


def test_json_export_answers_json_with_partial_success(
    live: LiveReceiver, consumer: CapturingConsumer
) -> None:
    doc = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "b"}}]
                },
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": str(time.time_ns()),
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "attributes": [
                                    {"key": k, "value": {"stringValue": v}}
                                    for k, v in audit_attributes(0).items()
                                ],
                            },
                            {
                                "attributes": [
                                    {"key": "audit.action", "value": {"stringValue": "bad.action"}}
                                ]
                            },
                        ]
                    }
                ],
            }
        ]
    }
    response = _post(live, orjson.dumps(doc), {"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {
        "partialSuccess": {
            "rejectedLogRecords": 1,
            "errorMessage": "1 records rejected: audit.action: bad",
        }
    }
    assert consumer.records[0].trace_id == "5b8efff798038103d269b633813fc60c"


def test_json_success_without_rejections_is_an_empty_object(live: LiveReceiver) -> None:
    response = _post(live, b'{"resourceLogs": []}', JSON)
    assert (response.status_code, response.json()) == (200, {})


def test_gzip_and_chunked_bodies(live: LiveReceiver, consumer: CapturingConsumer) -> None:
    body = logs_request(5).SerializeToString()
    response = _post(live, gzip.compress(body), {**PB, "Content-Encoding": "gzip"})
    assert response.status_code == 200
    chunks = (body[i : i + 100] for i in range(0, len(body), 100))
    response = requests.post(live.http_url + "/v1/logs", data=chunks, headers=PB, timeout=10)
    assert response.status_code == 200
    assert len(consumer.records) == 10
    # gzip members concatenated are one valid gzip body
    two = gzip.compress(body[:50]) + gzip.compress(body[50:])
    assert _post(live, two, {**PB, "Content-Encoding": "gzip"}).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/protobuf", ""])
def test_unsupported_content_type_is_415_with_a_status_body(
    live: LiveReceiver, content_type: str
) -> None:
    response = _post(live, b"x", {"Content-Type": content_type} if content_type else {})
    assert response.status_code == 415
    assert response.json()["code"] == 3
    assert "Content-Type" in response.json()["message"]


def test_unsupported_content_encoding_is_415(live: LiveReceiver) -> None:
    response = _post(live, b"x", {**PB, "Content-Encoding": "br"})
    assert response.status_code == 415
    assert "Content-Encoding" in _status(response).message


def test_garbage_is_400_with_a_status_in_the_request_type(live: LiveReceiver) -> None:
    response = _post(live, b"\xff\xfe garbage", PB)
    assert response.status_code == 400
    status = _status(response)
    assert status.code == 3 and "ExportLogsServiceRequest" in status.message
    response = _post(live, b"{not json", JSON)
    assert response.status_code == 400
    assert response.json()["code"] == 3 and "not JSON" in response.json()["message"]


def test_truncated_protobuf_and_gzip_are_400(live: LiveReceiver) -> None:
    body = logs_request(20).SerializeToString()
    assert _post(live, body[: len(body) - 7], PB).status_code == 400
    zipped = gzip.compress(body)
    response = _post(live, zipped[: len(zipped) // 2], {**PB, "Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert "truncated" in _status(response).message
    response = _post(live, b"not gzip at all", {**PB, "Content-Encoding": "gzip"})
    assert response.status_code == 400


def test_oversized_bodies_are_413(live: LiveReceiver) -> None:
    big = logs_request([audit_attributes(0, pad="x" * 70_000)]).SerializeToString()
    assert _post(live, big, PB).status_code == 413
    # chunked: no Content-Length to check up front
    chunks = (big[i : i + 8192] for i in range(0, len(big), 8192))
    response = requests.post(live.http_url + "/v1/logs", data=chunks, headers=PB, timeout=10)
    assert response.status_code == 413
    assert "max_request_bytes" in _status(response).message


def test_gzip_bomb_is_413_within_the_in_flight_budget(live: LiveReceiver) -> None:
    bomb = gzip.compress(b"\x00" * (50 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 64 * 1024  # small on the wire
    response = _post(live, bomb, {**PB, "Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "decompressed" in _status(response).message
    assert live.server.budget.used_bytes == 0


def test_deep_nesting_is_400(live: LiveReceiver) -> None:
    response = _post(live, deeply_nested_logs_body(200), PB)
    assert response.status_code == 400
    assert _status(response).code == 3


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (Overloaded("busy", retry_after_s=2.5), 429, "3"),
        (Unavailable("store down and spool full", retry_after_s=10), 503, "10"),
        (RuntimeError("bug"), 503, "1"),
    ],
)
def test_retryable_errors_carry_retry_after(
    live: LiveReceiver, consumer: CapturingConsumer, error: Exception, status: int, retry_after: str
) -> None:
    consumer.fail_with = error
    response = _post(live, logs_request(1).SerializeToString(), PB)
    assert response.status_code == status
    assert response.headers["Retry-After"] == retry_after
    assert _status(response).code in (8, 14)
    response = _post(live, b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{}]}]}]}', JSON)
    assert response.status_code == status and response.headers["Retry-After"] == retry_after


def test_in_flight_budget_pushes_back_at_once(consumer: CapturingConsumer) -> None:
    # Bodies only (no decoded-size charge), so that exactly one request fits.
    config = _bodies_only(
        front_config(max_request_bytes=4096, max_inflight_bytes=4096, overload_retry_after_s=2)
    )
    body = logs_request(7).SerializeToString()
    assert 2048 < len(body) <= 4096
    consumer.delay_s = 1.0
    with running_receiver(consumer, config) as live:
        first: list[int] = []
        slow = threading.Thread(target=lambda: first.append(_post(live, body, PB).status_code))
        slow.start()
        deadline = time.monotonic() + 5
        while live.server.budget.used_bytes == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        response = _post(live, body, PB)
        assert response.status_code == 429
        assert time.monotonic() - started < 0.5  # answered, not queued
        assert response.headers["Retry-After"] == "2"
        slow.join()
        assert first == [200]
        assert live.server.budget.used_bytes == 0


def test_wrong_method_and_unknown_path(live: LiveReceiver) -> None:
    assert requests.get(live.http_url + "/v1/logs", timeout=5).status_code == 405
    assert _post(live, b"", PB, path="/v1/metrics").status_code == 404


def test_health_readiness_and_metrics(live: LiveReceiver, consumer: CapturingConsumer) -> None:
    assert requests.get(live.http_url + "/healthz", timeout=5).status_code == 200
    assert requests.get(live.http_url + "/readyz", timeout=5).status_code == 200
    consumer.is_ready = False
    assert requests.get(live.http_url + "/readyz", timeout=5).status_code == 503
    _post(live, logs_request(2).SerializeToString(), PB)
    text = requests.get(live.http_url + "/metrics", timeout=5).text
    assert 'otel_audit_receiver_requests_total{code="200",signal="logs",transport="http"}' in text
    assert "otel_audit_receiver_records_accepted_total" in text
    assert "process_cpu_seconds_total" in text


def test_admin_listener_serves_health_only(consumer: CapturingConsumer) -> None:
    with running_receiver(consumer, front_config(admin_endpoint="127.0.0.1:0")) as live:
        admin = f"http://127.0.0.1:{live.server.admin_port}"
        assert requests.get(admin + "/healthz", timeout=5).status_code == 200
        assert requests.get(admin + "/metrics", timeout=5).status_code == 200
        assert requests.post(admin + "/v1/logs", data=b"", headers=PB, timeout=5).status_code == 404


def test_draining_server_answers_503(live: LiveReceiver) -> None:
    live.server.handler.draining = True
    response = _post(live, logs_request(1).SerializeToString(), PB)
    assert response.status_code == 503 and "Retry-After" in response.headers
    live.server.handler.draining = False


def test_traces_protobuf_and_json(live: LiveReceiver, consumer: CapturingConsumer) -> None:
    request = traces_request(3)
    request.resource_spans[0].scope_spans[0].spans[1].trace_id = b"\x00"
    response = _post(live, request.SerializeToString(), PB, path="/v1/traces")
    assert response.status_code == 200
    answer = ExportTraceServiceResponse()
    answer.ParseFromString(response.content)
    assert answer.partial_success.rejected_spans == 1
    assert len(consumer.spans) == 2
    response = _post(live, b'{"resourceSpans": []}', JSON, path="/v1/traces")
    assert (response.status_code, response.json()) == (200, {})


def test_traces_path_absent_without_a_spans_consumer(consumer: CapturingConsumer) -> None:
    with running_receiver(consumer, front_config(), spans=None) as live:
        assert _post(live, b"", PB, path="/v1/traces").status_code == 404


def test_real_sdk_http_exporter(live: LiveReceiver, consumer: CapturingConsumer) -> None:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = _logs_compat.sdk_logger_provider({"service.name": "billing"})
    provider.add_log_record_processor(
        _logs_compat.simple_processor(
            OTLPLogExporter(endpoint=live.http_url + "/v1/logs", compression=None)
        )
    )
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": "billing"}))
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=live.http_url + "/v1/traces"))
    )
    audit = AuditLogger(provider)
    with tracer_provider.get_tracer("t").start_as_current_span("update invoice") as span:
        audit.emit(
            action="invoice.update",
            category="data_change",
            outcome="success",
            actor_id="u-1",
            actor_type="user",
            resource_type="invoice",
            resource_id="inv-1",
        )
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    tracer_provider.shutdown()
    (record,) = consumer.records
    assert record.attributes["audit.action"] == "invoice.update"
    assert record.resource["service.name"] == "billing"
    assert record.trace_id == trace_id
    assert [s.name for s in consumer.spans] == ["update invoice"]
    assert consumer.spans[0].trace_id == trace_id


def _bodies_only(config: ReceiverConfig) -> ReceiverConfig:
    import dataclasses
    import types

    sections = dict(config.sections, limits=LimitsConfig(decoded_bytes_per_wire_byte=0))
    return dataclasses.replace(config, sections=types.MappingProxyType(sections))
