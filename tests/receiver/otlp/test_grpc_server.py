"""OTLP/gRPC server: real grpc stubs and the real SDK exporter against it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

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


@pytest.fixture
def channel(live: LiveReceiver) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(live.grpc_target) as channel:
        yield channel


def _raw(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")


def _retry_delay(error: grpc.RpcError) -> float | None:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            status.ParseFromString(value)
            assert status.code == error.code().value[0]
            for detail in status.details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def test_export_with_generated_stub(channel: grpc.Channel, consumer: CapturingConsumer) -> None:
    stub = logs_service_pb2_grpc.LogsServiceStub(channel)
    response = stub.Export(logs_request(3), timeout=10)
    assert isinstance(response, ExportLogsServiceResponse)
    assert not response.HasField("partial_success")
    assert len(consumer.records) == 3


def test_partial_success(channel: grpc.Channel, consumer: CapturingConsumer) -> None:
    request = logs_request([audit_attributes(0, audit__action="bad.action"), audit_attributes(1)])
    request.resource_logs[0].scope_logs[0].log_records[1].trace_id = b"\x01" * 3
    response = logs_service_pb2_grpc.LogsServiceStub(channel).Export(request, timeout=10)
    assert response.partial_success.rejected_log_records == 2
    assert "trace_id must be 16 bytes, got 3" in response.partial_success.error_message
    assert consumer.reasons == ["trace_id must be 16 bytes, got 3"]


def test_gzip_compressed_request(channel: grpc.Channel, consumer: CapturingConsumer) -> None:
    stub = logs_service_pb2_grpc.LogsServiceStub(channel)
    stub.Export(logs_request(4), timeout=10, compression=grpc.Compression.Gzip)
    assert len(consumer.records) == 4


@pytest.mark.parametrize(
    "body",
    [b"\xff\xff garbage", logs_request(5).SerializeToString()[:-9], deeply_nested_logs_body(200)],
    ids=["garbage", "truncated", "deep"],
)
def test_bad_data_is_invalid_argument(channel: grpc.Channel, body: bytes) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _raw(channel)(body, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _retry_delay(info.value) is None


def test_oversized_message_is_resource_exhausted_without_retry_info(channel: grpc.Channel) -> None:
    big = logs_request([audit_attributes(0, pad="x" * 70_000)])
    with pytest.raises(grpc.RpcError) as info:
        logs_service_pb2_grpc.LogsServiceStub(channel).Export(big, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _retry_delay(info.value) is None


@pytest.mark.parametrize(
    ("error", "code", "delay"),
    [
        (Overloaded("busy", retry_after_s=2.5), grpc.StatusCode.RESOURCE_EXHAUSTED, 2.5),
        (Unavailable("store down, spool full", retry_after_s=10), grpc.StatusCode.UNAVAILABLE, 10),
        (RuntimeError("bug"), grpc.StatusCode.UNAVAILABLE, 1.0),
    ],
)
def test_retryable_errors_carry_retry_info(
    channel: grpc.Channel,
    consumer: CapturingConsumer,
    error: Exception,
    code: grpc.StatusCode,
    delay: float,
) -> None:
    consumer.fail_with = error
    with pytest.raises(grpc.RpcError) as info:
        logs_service_pb2_grpc.LogsServiceStub(channel).Export(logs_request(1), timeout=10)
    assert info.value.code() == code
    assert _retry_delay(info.value) == pytest.approx(delay)


def test_in_flight_budget_is_shared_with_http(consumer: CapturingConsumer) -> None:
    import requests

    # Bodies only (no decoded-size charge), so that exactly one request fits.
    config = _bodies_only(front_config(max_request_bytes=4096, max_inflight_bytes=4096))
    body = logs_request(7).SerializeToString()
    consumer.delay_s = 1.0
    with (
        running_receiver(consumer, config) as live,
        grpc.insecure_channel(live.grpc_target) as channel,
    ):
        answers: list[int] = []
        slow = threading.Thread(
            target=lambda: answers.append(
                requests.post(
                    live.http_url + "/v1/logs",
                    data=body,
                    headers={"Content-Type": "application/x-protobuf"},
                    timeout=10,
                ).status_code
            )
        )
        slow.start()
        deadline = time.monotonic() + 5
        while live.server.budget.used_bytes == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as info:
            _raw(channel)(body, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _retry_delay(info.value) == pytest.approx(1.0)
        slow.join()
        assert answers == [200]


def test_trace_service(channel: grpc.Channel, consumer: CapturingConsumer) -> None:
    request = traces_request(2)
    request.resource_spans[0].scope_spans[0].spans[0].span_id = b""
    response = trace_service_pb2_grpc.TraceServiceStub(channel).Export(request, timeout=10)
    assert response.partial_success.rejected_spans == 1
    assert [s.name for s in consumer.spans] == ["op-1"]


def test_trace_service_unimplemented_without_spans_consumer(consumer: CapturingConsumer) -> None:
    with (
        running_receiver(consumer, front_config(), spans=None) as live,
        grpc.insecure_channel(live.grpc_target) as channel,
    ):
        with pytest.raises(grpc.RpcError) as info:
            trace_service_pb2_grpc.TraceServiceStub(channel).Export(traces_request(1), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_empty_request_is_ok(channel: grpc.Channel, consumer: CapturingConsumer) -> None:
    logs_service_pb2_grpc.LogsServiceStub(channel).Export(ExportLogsServiceRequest(), timeout=10)
    assert consumer.calls == 0


def test_real_sdk_grpc_exporter(live: LiveReceiver, consumer: CapturingConsumer) -> None:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    endpoint = f"http://{live.grpc_target}"
    provider = _logs_compat.sdk_logger_provider({"service.name": "billing"})
    provider.add_log_record_processor(
        _logs_compat.batch_processor(
            OTLPLogExporter(endpoint=endpoint, insecure=True, compression=grpc.Compression.Gzip),
            schedule_delay_millis=50,
        )
    )
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": "billing"}))
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
    )
    audit = AuditLogger(provider)
    with tracer_provider.get_tracer("t").start_as_current_span("grant role") as span:
        for i in range(20):
            audit.emit(
                action="role.grant",
                category="permission_change",
                outcome="success",
                actor_id="admin-1",
                actor_type="user",
                resource_type="role",
                resource_id=f"r-{i}",
            )
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.force_flush()
    provider.shutdown()
    tracer_provider.shutdown()
    assert len(consumer.records) == 20
    assert {r.trace_id for r in consumer.records} == {trace_id}
    assert sorted(r.attributes["audit.resource.id"] for r in consumer.records) == sorted(
        f"r-{i}" for i in range(20)
    )
    assert consumer.spans[0].name == "grant role"


def _bodies_only(config: ReceiverConfig) -> ReceiverConfig:
    import dataclasses
    import types

    sections = dict(config.sections, limits=LimitsConfig(decoded_bytes_per_wire_byte=0))
    return dataclasses.replace(config, sections=types.MappingProxyType(sections))
