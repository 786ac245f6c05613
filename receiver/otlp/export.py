"""What both OTLP servers do with a decoded request: hand it to the consumers, count it.

:class:`ExportHandler` is shared by the gRPC and HTTP servers. It passes the good records
to the :class:`~receiver.pipeline.LogsConsumer`, the records rejected while decoding to
the consumer's optional ``reject_records(records, reasons)`` (the ingest pipeline keeps
them in the dead-letter index), and merges both into one partial-success answer. It also
tracks the requests in progress so that shutdown can drain them, and refuses new work
(Unavailable, retryable) once draining has begun.

Optional consumer methods, looked up at run time (a plain ``LogsConsumer`` works too):

- ``async reject_records(records, reasons) -> None``: keep records rejected before the
  consumer saw them (one reason per record).
- ``async start() -> None``, ``async shutdown(timeout_s) -> None``: lifecycle, called by
  :class:`receiver.server.ReceiverServer`.
- ``ready() -> bool``: whether the consumer can make records durable now (``/readyz``).
- ``native_plan`` (attribute): a :func:`receiver.ingest.prepare.native_plan` for the protobuf
  decoder, which then attaches each covered record's write as ``record.prepared``.

With a :class:`~receiver.identity.Writer` (the servers authenticate every request first),
the records outside the writer's allowance are rejected on their own (partial success,
dead letter with rule ``writer_not_allowed``), the writer's rate bucket is charged, and
every stored document gets the ``writer`` object. A request is decoded with the writer's
own native plan (``Plan.with_writer``, made once per writer): the extension prepares only
the records within the allowance, and writes the ``writer`` object into their documents
before their leaf is hashed, so neither costs Python anything per record. The records it
leaves unprepared are judged here and built where
:func:`receiver.ingest.prepare.prepare_in_python` builds them (it reads
:data:`~receiver.identity.CURRENT_WRITER`, set while the consumer runs). Without that
plan (an older extension), the prepared records' stored values are read back and the
writer appended to their bytes here (:func:`~receiver.identity.stamp_writer`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from otel_audit.record import LogRecordData
from otel_audit.schema import load_schema
from otel_audit.span_record import SpanData
from otel_audit.validate import Violation
from receiver.errors import Unavailable
from receiver.identity import CURRENT_WRITER, WRITER_FIELD, StoredFields, Writer, stamp_writer
from receiver.metrics import RECORDS_ACCEPTED, RECORDS_RECEIVED, RECORDS_REJECTED
from receiver.otlp.decode import DecodedLogs, decode_logs_json, decode_logs_protobuf
from receiver.otlp.decode_traces import DecodedSpans
from receiver.otlp.inflight import ByteBudget
from receiver.pipeline import IngestResult, LogsConsumer

__all__ = ["ExportHandler", "SpansSink"]

log = logging.getLogger("otel_audit.receiver")

_LOGS_ACCEPTED = RECORDS_ACCEPTED.labels(signal="logs")
_LOGS_RECEIVED = RECORDS_RECEIVED.labels(signal="logs")
_LOGS_INVALID_ID = RECORDS_REJECTED.labels(signal="logs", reason="invalid_id")
_LOGS_WRITER = RECORDS_REJECTED.labels(signal="logs", reason="writer_not_allowed")
_TENANT_ATTRIBUTE = "audit.tenant.id"
_WRITER_KEY = b',"' + WRITER_FIELD.encode() + b'":'
_MAX_WRITER_PLANS = 1024
_SERVICE_ATTRIBUTE = "service.name"
_SPANS_ACCEPTED = RECORDS_ACCEPTED.labels(signal="traces")
_SPANS_RECEIVED = RECORDS_RECEIVED.labels(signal="traces")
_SPANS_INVALID_ID = RECORDS_REJECTED.labels(signal="traces", reason="invalid_id")
_SPANS_STORE = RECORDS_REJECTED.labels(signal="traces", reason="store")


class SpansSink(Protocol):
    """The span store's interface: returns how many spans it accepted."""

    async def consume_spans(self, spans: list[SpanData]) -> int: ...


def _decode_message(kind: str, reasons: list[str]) -> str:
    first = reasons[0]
    more = len(reasons) - 1
    return f"{len(reasons)} {kind} rejected: {first}" + (f" (+{more} more)" if more else "")


class ExportHandler:
    """Consumer calls, in-flight tracking and draining for both servers."""

    def __init__(
        self,
        logs_consumer: LogsConsumer,
        spans_consumer: SpansSink | None,
        budget: ByteBudget,
        *,
        decode_in_thread_bytes: int = 0,
    ) -> None:
        self.logs_consumer = logs_consumer
        self.decode_in_thread_bytes = decode_in_thread_bytes
        # Large bodies are decoded one at a time in a thread of their own: building their
        # records holds the GIL, and every such thread more is one more the event loop
        # waits behind for each small request's step.
        self._large_lane: ThreadPoolExecutor | None = None
        self._writer_plans: dict[int, tuple[Writer, Any]] = {}
        self.spans_consumer = spans_consumer
        self.budget = budget
        self._reject = getattr(logs_consumer, "reject_records", None)
        self._plan = getattr(logs_consumer, "native_plan", None)
        schema = load_schema()
        service_path = next(
            rf.stored for rf in schema.resource_fields if rf.attribute == _SERVICE_ATTRIBUTE
        )
        self._stored = StoredFields(
            (
                tuple(service_path.split(".")),
                tuple(schema.field(_TENANT_ATTRIBUTE).stored.split(".")),
            )
        )
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False

    def begin(self) -> None:
        """Count a request in; refuse it when shutting down."""
        if self.draining:
            raise Unavailable("receiver is shutting down; retry against another replica")
        self._active += 1
        self._idle.clear()

    def end(self) -> None:
        """Count a request out."""
        self._active -= 1
        if self._active == 0:
            self._idle.set()

    @property
    def active(self) -> int:
        """Requests in progress."""
        return self._active

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is in progress; False when ``timeout_s`` ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, timeout_s))
        except TimeoutError:
            return False
        return True

    def decode_logs(
        self, body: bytes, *, json: bool = False, writer: Writer | None = None
    ) -> DecodedLogs:
        """Decode a logs request. Protobuf records that the consumer's ``native_plan``
        (optional attribute; see :mod:`receiver.ingest.prepare`) covers carry their write;
        with a ``writer`` that has an allowance or is stored, the plan is the writer's own:
        only the records within its allowance are prepared, with the writer in them."""
        if json:
            return decode_logs_json(body)
        plan = self._writer_plan(writer)
        decoded = decode_logs_protobuf(body, plan)
        if plan is not None and plan is not self._plan:
            decoded.writer_plan = writer
        return decoded

    async def decode_logs_off_loop(
        self, body: bytes, *, json: bool = False, writer: Writer | None = None
    ) -> DecodedLogs:
        """:meth:`decode_logs`, in a worker thread of its own when the body is large."""
        threshold = self.decode_in_thread_bytes
        if threshold and len(body) >= threshold:
            if self._large_lane is None:
                self._large_lane = ThreadPoolExecutor(1, thread_name_prefix="otlp-large-decode")
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._large_lane,
                functools.partial(self.decode_logs, body, json=json, writer=writer),
            )
        return self.decode_logs(body, json=json, writer=writer)

    def _writer_plan(self, writer: Writer | None) -> Any:
        """The native plan for ``writer``'s requests: made once per writer, holding its
        allowance and its stored object, so neither is read nor written per record in
        Python (the consumer's own plan when there is nothing to check or store)."""
        plan = self._plan
        if plan is None or writer is None or (writer.stamp is None and writer.unrestricted):
            return plan
        cached = self._writer_plans.get(id(writer))
        if cached is not None and cached[0] is writer:
            return cached[1]
        with_writer = getattr(plan, "with_writer", None)
        if with_writer is None:
            return plan
        own = with_writer(
            _WRITER_KEY + writer.stamp if writer.stamp is not None else b"",
            None if writer.any_service else sorted(s.encode() for s in writer.services),
            None if writer.any_tenant else sorted(t.encode() for t in writer.tenants or ("",)),
            _SERVICE_ATTRIBUTE,
            _TENANT_ATTRIBUTE,
        )
        if len(self._writer_plans) >= _MAX_WRITER_PLANS:
            self._writer_plans.clear()
        self._writer_plans[id(writer)] = (writer, own)
        return own

    async def export_logs(
        self, decoded: DecodedLogs, writer: Writer | None = None
    ) -> tuple[int, str]:
        """Consume one request's records; (rejected count, message) for partial_success."""
        records = decoded.records
        _LOGS_RECEIVED.inc(decoded.total)
        refused: list[LogRecordData] = []
        refusals: list[str] = []
        if writer is not None:
            writer.charge(decoded.total)
            if records and (writer.stamp is not None or not writer.unrestricted):
                records, refused, refusals = self._apply_writer(
                    records, writer, decoded.writer_plan is writer
                )
        if records:
            token = CURRENT_WRITER.set(writer)
            try:
                result: IngestResult = await self.logs_consumer.consume_logs(records)
            finally:
                CURRENT_WRITER.reset(token)
        else:
            result = IngestResult(accepted=0, rejected=0)
        rejected = result.rejected
        messages = [result.error_message] if result.rejected and result.error_message else []
        if refused:
            await self._keep_refused(refused, refusals)
            rejected += len(refused)
            messages.append(_decode_message("log records", refusals))
            _LOGS_WRITER.inc(len(refused))
        if decoded.rejected:
            await self._keep_rejected(decoded)
            rejected += len(decoded.rejected)
            messages.append(_decode_message("log records", decoded.reasons))
            _LOGS_INVALID_ID.inc(len(decoded.rejected))
        if result.accepted:
            _LOGS_ACCEPTED.inc(result.accepted)
        return rejected, "; ".join(messages)

    def _apply_writer(
        self, records: list[LogRecordData], writer: Writer, prepared_for_writer: bool = False
    ) -> tuple[list[LogRecordData], list[LogRecordData], list[str]]:
        """(records to store, records refused, one reason each); the prepared records to
        store carry the writer. With ``prepared_for_writer`` (decoded with the writer's
        plan) the prepared records are already within the allowance and hold the writer:
        only the others are looked at."""
        keep: list[LogRecordData] = []
        refused: list[LogRecordData] = []
        reasons: list[str] = []
        stamp = writer.stamp
        check = not writer.unrestricted
        read_stored = self._stored.read
        decided: dict[tuple[Any, Any], str | None] = {}  # few distinct pairs per request
        for record in records:
            prepared = record.prepared
            if prepared_for_writer and prepared is not None:
                keep.append(record)
                continue
            if check:
                if prepared is not None:
                    service, tenant = read_stored(prepared)
                else:
                    resource = record.resource if isinstance(record.resource, dict) else {}
                    attrs = record.attributes if isinstance(record.attributes, dict) else {}
                    service = resource.get(_SERVICE_ATTRIBUTE)
                    tenant = attrs.get(_TENANT_ATTRIBUTE)
                pair = (service, tenant)
                why = decided.get(pair, "")
                if why == "":
                    why = decided[pair] = writer.refusal(service, tenant)
                if why is not None:
                    refused.append(record)
                    reasons.append(why)
                    continue
            if stamp is not None and prepared is not None:
                record.prepared = stamp_writer(prepared, stamp)
            keep.append(record)
        return keep, refused, reasons

    async def _keep_refused(self, records: list[LogRecordData], reasons: list[str]) -> None:
        if self._reject is None:
            log.warning(
                "records refused for their writer are not kept: the consumer has no reject_records",
                extra={"rejected": len(records), "reason": reasons[0]},
            )
            return
        await self._reject(
            records, [Violation("record", "writer_not_allowed", why) for why in reasons]
        )

    async def _keep_rejected(self, decoded: DecodedLogs) -> None:
        if self._reject is not None:
            await self._reject(decoded.rejected, decoded.reasons)
        else:
            log.warning(
                "records rejected while decoding are not kept: the consumer has no reject_records",
                extra={"rejected": len(decoded.rejected), "reason": decoded.reasons[0]},
            )

    async def export_spans(self, decoded: DecodedSpans) -> tuple[int, str]:
        """Consume one request's spans; (rejected count, message) for partial_success."""
        sink = self.spans_consumer
        if sink is None:  # the servers do not route traces without a consumer
            raise Unavailable("no span store is configured")
        _SPANS_RECEIVED.inc(decoded.total)
        spans = decoded.spans
        accepted = await sink.consume_spans(spans) if spans else 0
        accepted = max(0, min(int(accepted), len(spans)))
        rejected = len(spans) - accepted
        messages = [f"{rejected} spans rejected by the span store"] if rejected else []
        if rejected:
            _SPANS_STORE.inc(rejected)
        if decoded.rejected:
            rejected += len(decoded.rejected)
            messages.append(_decode_message("spans", decoded.reasons))
            _SPANS_INVALID_ID.inc(len(decoded.rejected))
        if accepted:
            _SPANS_ACCEPTED.inc(accepted)
        return rejected, "; ".join(messages)


def optional_method(obj: Any, name: str) -> Any:
    """``obj.name`` when it is callable, else None (optional consumer methods)."""
    method = getattr(obj, name, None)
    return method if callable(method) else None
