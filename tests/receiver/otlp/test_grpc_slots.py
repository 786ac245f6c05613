"""gRPC call slots: calls that open and never send their message, a full cap, and callers
without a credential. Real grpc.aio clients against the real server; the stalled calls are
``stream_unary`` calls on the Export method (what a unary client sends, minus the message)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from receiver.identity import WriterIdentity, WritersConfig, hash_token
from receiver.limits import LimitsConfig
from tests.collector.conftest import collector_binary, start_collector  # noqa: F401
from tests.support.front_harness import (
    CapturingConsumer,
    LiveReceiver,
    audit_attributes,
    front_config,
    logs_request,
    running_receiver,
)

METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TOKEN = "slots-writer-token-0123456789"
CAP = 4
MESSAGE_TIMEOUT_S = 2.0


def _config(*, timeout_s: float = MESSAGE_TIMEOUT_S, **sections: Any) -> Any:
    config = front_config()
    merged = dict(config.sections)
    merged["limits"] = LimitsConfig(
        max_concurrent_grpc_calls=CAP,
        max_concurrent_large_grpc_calls=1,
        grpc_message_timeout_s=timeout_s,
    )
    merged.update(sections)
    return dataclasses.replace(config, sections=types.MappingProxyType(merged))


@pytest.fixture
def live(consumer: CapturingConsumer) -> Iterator[LiveReceiver]:
    with running_receiver(consumer, _config()) as live:
        yield live


@pytest.fixture
def live_with_writers(consumer: CapturingConsumer) -> Iterator[LiveReceiver]:
    writers = WritersConfig(
        required=True,
        identities=(
            WriterIdentity(
                name="writer",
                token_sha256=(hash_token(TOKEN),),
                services=("*",),
                tenants=("*",),
            ),
        ),
    )
    writers.validate()
    with running_receiver(consumer, _config(writers=writers)) as live:
        yield live


def retry_delay_s(error: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay of ``grpc-status-details-bin``, as the Collector reads it."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            status.ParseFromString(value)
            for detail in status.details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


async def _never(stop: asyncio.Event) -> AsyncIterator[bytes]:
    await stop.wait()
    return
    yield b""  # an async generator that sends no message


async def _stalled(channel: grpc.aio.Channel, stop: asyncio.Event, **kwargs: Any) -> str:
    """A call that sends its headers and never its message; the status it ended with."""
    call = channel.stream_unary(METHOD)(_never(stop), timeout=60, **kwargs)
    try:
        await call
        return "OK"
    except grpc.aio.AioRpcError as exc:
        return exc.code().name


async def _normal(target: str, **kwargs: Any) -> tuple[float, grpc.aio.AioRpcError | None]:
    """A normal unary export on a connection of its own: seconds taken and its error."""
    own = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(target, options=own) as channel:
        started = time.monotonic()
        try:
            await channel.unary_unary(METHOD)(
                logs_request(2).SerializeToString(), timeout=10, **kwargs
            )
            return time.monotonic() - started, None
        except grpc.aio.AioRpcError as exc:
            return time.monotonic() - started, exc


def test_stalled_calls_are_cancelled_and_refusals_carry_retry_info(live: LiveReceiver) -> None:
    """40 calls that never send their message: a normal exporter is answered within 1 s
    (a refusal a Collector retries while they hold the slots) and accepted once the message
    timeout has cancelled them."""

    async def scenario() -> tuple[list[str], float, Any, float, Any]:
        stop = asyncio.Event()
        async with grpc.aio.insecure_channel(live.grpc_target) as channel:
            stalled = [asyncio.ensure_future(_stalled(channel, stop)) for _ in range(40)]
            await asyncio.sleep(0.5)
            during_s, during = await _normal(live.grpc_target)
            try:
                codes = await asyncio.wait_for(asyncio.gather(*stalled), MESSAGE_TIMEOUT_S + 10)
            finally:
                stop.set()
            after_s, after = await _normal(live.grpc_target)
            return codes, during_s, during, after_s, after

    codes, during_s, during, after_s, after = asyncio.run(scenario())
    assert during_s < 1.0
    if during is not None:  # every slot held by a stalled call: refused, with a retry delay
        assert during.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, during
        delay = retry_delay_s(during)
        assert delay is not None and delay > 0, "a refusal without RetryInfo is dropped"
    # The stalled calls that got a slot were cancelled by the message timeout; the others
    # were refused at once, with a retry delay.
    assert codes.count("DEADLINE_EXCEEDED") == CAP, codes
    assert set(codes) == {"DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}, codes
    assert after is None, after
    assert after_s < 1.0


def test_full_cap_refusal_carries_retry_info(live: LiveReceiver) -> None:
    async def scenario() -> grpc.aio.AioRpcError | None:
        stop = asyncio.Event()
        async with grpc.aio.insecure_channel(live.grpc_target) as channel:
            stalled = [asyncio.ensure_future(_stalled(channel, stop)) for _ in range(CAP)]
            await asyncio.sleep(0.5)
            _, refused = await _normal(live.grpc_target)
            stop.set()
            await asyncio.gather(*stalled)
            return refused

    refused = asyncio.run(scenario())
    assert refused is not None and refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "busy" in (refused.details() or "")
    delay = retry_delay_s(refused)
    assert delay is not None and delay > 0


def test_unauthenticated_call_is_refused_before_its_message(
    live_with_writers: LiveReceiver, consumer: CapturingConsumer
) -> None:
    """Without a credential a call is refused from its headers: one that never sends its
    message is answered at once, takes no slot, and a 6 MiB body is never waited for."""
    target = live_with_writers.grpc_target
    bearer = (("authorization", f"Bearer {TOKEN}"),)

    async def big(channel: grpc.aio.Channel) -> str:
        async def body() -> AsyncIterator[bytes]:
            yield bytes(6 * 1024 * 1024)

        try:
            await channel.stream_unary(METHOD)(body(), timeout=30)
            return "OK"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name

    async def scenario() -> tuple[list[str], float, str, float, Any]:
        stop = asyncio.Event()
        async with grpc.aio.insecure_channel(target) as channel:
            started = time.monotonic()
            stalled = await asyncio.wait_for(
                asyncio.gather(*(_stalled(channel, stop) for _ in range(40))), 5
            )
            stalled_s = time.monotonic() - started
            big_code = await asyncio.wait_for(big(channel), 5)
            normal_s, normal = await _normal(target, metadata=bearer)
            stop.set()
            return stalled, stalled_s, big_code, normal_s, normal

    stalled, stalled_s, big_code, normal_s, normal = asyncio.run(scenario())
    # Answered from the headers: read first, they would have ended DEADLINE_EXCEEDED.
    assert set(stalled) == {"UNAUTHENTICATED"}, f"{stalled} after {stalled_s:.1f} s"
    assert big_code == "UNAUTHENTICATED"
    assert normal is None, normal
    assert normal_s < 1.0
    assert len(consumer.records) == 2
    assert live_with_writers.server.handler.budget.used_bytes == 0  # nothing left charged


def test_second_message_is_invalid_argument(
    live: LiveReceiver, consumer: CapturingConsumer
) -> None:
    body = logs_request(1).SerializeToString()

    async def scenario() -> str:
        async def two() -> AsyncIterator[bytes]:
            yield body
            yield body

        async with grpc.aio.insecure_channel(live.grpc_target) as channel:
            try:
                await channel.stream_unary(METHOD)(two(), timeout=10)
                return "OK"
            except grpc.aio.AioRpcError as exc:
                assert "one request message" in (exc.details() or "")
                return exc.code().name

    assert asyncio.run(scenario()) == "INVALID_ARGUMENT"
    assert consumer.records == []


@pytest.mark.collector
def test_real_collector_retries_a_busy_refusal(
    start_collector: Any,  # noqa: F811
    consumer: CapturingConsumer,
) -> None:
    """The Collector's OTLP exporter drops a RESOURCE_EXHAUSTED without RetryInfo for good;
    with every slot held by stalled calls, its audit record is refused, retried, and
    delivered once the message timeout has freed the slots."""
    hold_s = 6.0
    with running_receiver(consumer, _config(timeout_s=hold_s)) as live:
        collector = start_collector(
            live.grpc_target, env={"OTEL_AUDIT_BACKEND_ENDPOINT": "http://127.0.0.1:9"}
        )

        async def scenario() -> list[str]:
            stop = asyncio.Event()
            async with grpc.aio.insecure_channel(live.grpc_target) as channel:
                stalled = [asyncio.ensure_future(_stalled(channel, stop)) for _ in range(CAP)]
                await asyncio.sleep(0.5)
                await asyncio.to_thread(_emit_audit_record, collector.otlp_grpc_endpoint)
                try:
                    return await asyncio.wait_for(asyncio.gather(*stalled), hold_s + 10)
                finally:
                    stop.set()

        codes = asyncio.run(scenario())
        assert codes == ["DEADLINE_EXCEEDED"] * CAP
        deadline = time.monotonic() + 30
        while not consumer.records and time.monotonic() < deadline:
            time.sleep(0.2)
        log = collector.log_tail(400)
        assert [r.attributes["audit.resource.id"] for r in consumer.records] == ["inv-0"], log
        assert "receiver is busy" in log and "Will retry" in log, log


def _emit_audit_record(endpoint: str) -> None:
    provider = LoggerProvider(resource=Resource.create({"service.name": "billing"}))
    exporter = OTLPLogExporter(endpoint=endpoint, insecure=True, timeout=10)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    provider.get_logger("tests.slots").emit(
        LogRecord(
            timestamp=time.time_ns(),
            severity_number=SeverityNumber.INFO,
            body="invoice updated",
            attributes=audit_attributes(0),
        )
    )
    assert provider.force_flush(timeout_millis=15_000)
    provider.shutdown()
