"""Test harness of the OTLP servers: capturing consumers, payload builders, a live server.

:func:`running_receiver` runs a :class:`~receiver.server.ReceiverServer` on free ports in
a background thread with its own event loop, so tests drive it with ordinary blocking
clients (urllib, grpc stubs, the OTel SDK exporters).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_audit.emit import new_event_id
from otel_audit.record import LogRecordData
from otel_audit.span_record import SpanData
from receiver.config import ReceiverConfig, load_config
from receiver.errors import ReceiverError
from receiver.pipeline import IngestResult
from receiver.server import ReceiverServer

TRACE_ID = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SPAN_ID = bytes.fromhex("b7ad6b7169203331")


class CapturingConsumer:
    """Keeps every record; rejects records whose ``audit.action`` is ``bad.action``.

    ``fail_with`` makes the next calls raise that error; ``delay_s`` slows each call.
    """

    def __init__(self) -> None:
        self.records: list[LogRecordData] = []
        self.rejected: list[LogRecordData] = []
        self.reasons: list[str] = []
        self.spans: list[SpanData] = []
        self.fail_with: ReceiverError | Exception | None = None
        self.delay_s = 0.0
        self.is_ready = True
        self.started = False
        self.shutdown_timeout_s: float | None = None
        self.calls = 0

    async def start(self) -> None:
        self.started = True

    def ready(self) -> bool:
        return self.is_ready

    async def shutdown(self, timeout_s: float) -> None:
        self.shutdown_timeout_s = timeout_s

    async def consume_logs(self, records: list[LogRecordData]) -> IngestResult:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        bad = [r for r in records if r.attributes.get("audit.action") == "bad.action"]
        self.records.extend(r for r in records if r not in bad)
        message = f"{len(bad)} records rejected: audit.action: bad" if bad else ""
        return IngestResult(
            accepted=len(records) - len(bad), rejected=len(bad), error_message=message
        )

    async def reject_records(self, records: list[LogRecordData], reasons: list[str]) -> None:
        self.rejected.extend(records)
        self.reasons.extend(reasons)

    async def consume_spans(self, spans: list[SpanData]) -> int:
        self.spans.extend(spans)
        return len(spans)


def build_slow_consumer(config: Any) -> CapturingConsumer:
    """Factory for ``consumer: tests.support.front_harness:build_slow_consumer``."""
    consumer = CapturingConsumer()
    consumer.delay_s = 1.5
    return consumer


def kv(key: str, value: Any) -> KeyValue:
    """A KeyValue from a plain value (str, bool, int, float, bytes, list, dict)."""
    return KeyValue(key=key, value=any_value(value))


def any_value(value: Any) -> AnyValue:
    """An AnyValue from a plain value."""
    if value is None:
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    out = AnyValue()
    if isinstance(value, list):
        out.array_value.values.extend(any_value(v) for v in value)
    elif isinstance(value, dict):
        out.kvlist_value.values.extend(kv(k, v) for k, v in value.items())
    else:
        raise TypeError(type(value))
    return out


def audit_attributes(n: int = 0, **overrides: Any) -> dict[str, Any]:
    """The attributes of a valid audit event (keys with ``__`` mean ``.``)."""
    attrs: dict[str, Any] = {
        "audit.action": "invoice.update",
        "audit.category": "data_change",
        "audit.outcome": "success",
        "audit.actor.id": f"user-{n}",
        "audit.actor.type": "user",
        "audit.resource.type": "invoice",
        "audit.resource.id": f"inv-{n}",
        "audit.event.id": new_event_id(),
    }
    for key, value in overrides.items():
        attrs[key.replace("__", ".")] = value
    return attrs


def logs_request(
    records: list[dict[str, Any]] | int = 1,
    *,
    resource: dict[str, Any] | None = None,
    trace_id: bytes = TRACE_ID,
    span_id: bytes = SPAN_ID,
) -> ExportLogsServiceRequest:
    """An export request with one record per attribute dict (or ``n`` valid records)."""
    if isinstance(records, int):
        records = [audit_attributes(i) for i in range(records)]
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.extend(
        kv(k, v) for k, v in (resource or {"service.name": "billing"}).items()
    )
    sl = rl.scope_logs.add()
    sl.scope.name = "otel_audit"
    sl.scope.version = "1.0"
    now = time.time_ns()
    for attrs in records:
        lr = sl.log_records.add()
        lr.time_unix_nano = now
        lr.observed_time_unix_nano = now
        lr.severity_number = 9
        lr.severity_text = "INFO"
        lr.trace_id = trace_id
        lr.span_id = span_id
        lr.flags = 1
        lr.event_name = "audit"
        lr.body.string_value = "invoice updated"
        lr.attributes.extend(kv(k, v) for k, v in attrs.items())
    return request


def traces_request(n: int = 1, *, trace_id: bytes = TRACE_ID) -> ExportTraceServiceRequest:
    """An export request with ``n`` spans of one trace."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "billing"))
    ss = rs.scope_spans.add()
    ss.scope.name = "tracer"
    for i in range(n):
        sp = ss.spans.add()
        sp.trace_id = trace_id
        sp.span_id = (i + 1).to_bytes(8, "big")
        sp.parent_span_id = SPAN_ID if i else b""
        sp.name = f"op-{i}"
        sp.kind = 2
        sp.start_time_unix_nano = 1_700_000_000_000_000_000
        sp.end_time_unix_nano = 1_700_000_000_100_000_000
        sp.status.code = 2
        sp.status.message = "boom"
        sp.attributes.append(kv("http.route", "/invoices"))
    return request


def front_config(**values: Any) -> ReceiverConfig:
    """Defaults on free loopback ports, with ``values`` applied."""
    base = load_config(env={})
    values.setdefault("grpc_endpoint", "127.0.0.1:0")
    values.setdefault("http_endpoint", "127.0.0.1:0")
    values.setdefault("shutdown_timeout_s", 5.0)
    return dataclasses.replace(base, **values)


class LiveReceiver:
    """A started server in a background loop; ``call`` runs coroutines on that loop."""

    def __init__(self, server: ReceiverServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    def call(self, coro: Any, timeout_s: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)


@contextmanager
def running_receiver(
    consumer: Any, config: ReceiverConfig | None = None, *, spans: Any = "same"
) -> Iterator[LiveReceiver]:
    """Run a receiver around ``consumer`` (spans to it too unless ``spans`` says otherwise)."""
    config = config or front_config()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = ReceiverServer(config, consumer, consumer if spans == "same" else spans)
    live = LiveReceiver(server, loop)
    try:
        live.call(server.start())
        yield live
    finally:
        live.call(server.shutdown(5.0))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def varint(n: int) -> bytes:
    """``n`` (non-negative) as a protobuf base-128 varint."""
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def length_delimited(key: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field: its key (field number << 3 | 2), then payload."""
    return varint(key) + varint(len(payload)) + payload


def array_value(values: list[AnyValue]) -> AnyValue:
    """An ``AnyValue`` holding an array of ``values``."""
    out = AnyValue()
    out.array_value.values.extend(values)
    return out


def kvlist_value(pairs: list[KeyValue]) -> AnyValue:
    """An ``AnyValue`` holding a key-value list."""
    out = AnyValue()
    out.kvlist_value.values.extend(pairs)
    return out


def key_value(key: str, value: AnyValue | None) -> KeyValue:
    """A ``KeyValue``; ``None`` leaves its value unset."""
    return KeyValue(key=key) if value is None else KeyValue(key=key, value=value)


def deeply_nested_logs_body(depth: int) -> bytes:
    """A serialized ExportLogsServiceRequest whose one attribute nests ``depth`` arrays.

    Built on the wire by hand: protobuf's own API refuses to build such messages.
    """
    inner = length_delimited(0x0A, b"leaf")  # AnyValue.string_value
    for _ in range(depth):
        inner = length_delimited(
            0x2A, length_delimited(0x0A, inner)
        )  # AnyValue.array_value{values: [inner]}
    kv = length_delimited(0x0A, b"k") + length_delimited(0x12, inner)
    record = length_delimited(0x32, kv)  # LogRecord.attributes
    scope_logs = length_delimited(0x12, record)  # ScopeLogs.log_records
    resource_logs = length_delimited(0x12, scope_logs)  # ResourceLogs.scope_logs
    return length_delimited(0x0A, resource_logs)  # ExportLogsServiceRequest.resource_logs


def comparable(value: Any) -> Any:
    """``value`` with its types spelled out: True is not 1, -0.0 is not 0.0, NaN is NaN."""
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, dict):
        return ("dict", [(comparable(k), comparable(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [comparable(v) for v in value])
    return (type(value).__name__, value)


def comparable_record(record: LogRecordData) -> Any:
    """A record as :func:`comparable` sees it, without the hash only one decoder computes."""
    return comparable(
        {
            f.name: getattr(record, f.name)
            for f in dataclasses.fields(record)
            if f.name != "content_sha256"
        }
    )
