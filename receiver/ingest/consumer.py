"""The durable ingest behind the OTLP servers: validate -> build document -> write -> ack.

::

    consume_logs(records)                                        consumer.py
      |-- prepared by the native decoder, or validated and built in Python (prepare.py);
      |   refused records become dead-letter writes
      v
    Batcher.submit: concurrent requests share one _bulk            batcher.py
      v
    Router.store: Elasticsearch, or the spool while it is away     router.py
      |           (indexer.bulk.BulkWriter: op_type=create, _id = event id)
      |-- SealHandoff: stored events -> the sealer                 seal_handoff.py
      v
    results: 409 other content (conflict) and mapping errors       deadletters.py
             -> rejected (partial success) + dead letter

Each stage is an object handed the next one's callable, so a test can end the chain
anywhere. The acknowledgement waits until every accepted record is durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from elasticsearch import AsyncElasticsearch
from elasticsearch.serializer import OrjsonSerializer

from indexer.bulk import (
    CREATED,
    BulkItem,
    BulkSettings,
    BulkWriter,
    ItemStatus,
    PreEncodedNdjson,
)
from indexer.deadletter import rejected_item
from indexer.es_client import EsConnection, async_client
from indexer.indices import daily_index
from indexer.mappings import template_settings_of
from otel_audit.document import content_hash
from otel_audit.record import LogRecordData
from otel_audit.schema import Schema, load_schema
from otel_audit.validate import Violation, summarize, validate
from receiver import metrics
from receiver.errors import Unavailable
from receiver.ingest.batcher import Batcher
from receiver.ingest.deadletters import DeadLetters, refusal
from receiver.ingest.prepare import Prepared, native_plan, prepare_in_python
from receiver.ingest.router import Router
from receiver.ingest.seal_handoff import Sealer, SealHandoff
from receiver.ingest.settings import IngestSettings
from receiver.ingest.spool import Spool
from receiver.ingest.templates import TemplateGate
from receiver.pipeline import IngestResult

__all__ = [
    "IngestConsumer",
    "IngestSettings",
    "Sealer",
    "build_consumer",
]

_log = logging.getLogger(__name__)

_PREPARED = attrgetter("prepared")
_NS_PER_DAY = 86_400 * 1_000_000_000
_HEX = frozenset("0123456789abcdefABCDEF")


def _uuid7_ms(event_id: str) -> int | None:
    """The Unix milliseconds a UUIDv7 id embeds (RFC 9562); None for any other id."""
    if len(event_id) != 36 or event_id[14] != "7" or event_id[8] != "-" or event_id[13] != "-":
        return None
    head = event_id[:8] + event_id[9:13]
    if not _HEX.issuperset(head):
        return None
    return int(head, 16)


def _index_for(current: str, when_ns: int) -> str:
    """The daily index of ``when_ns`` with the prefix of ``current`` (``<prefix>YYYY.MM.DD``)."""
    return daily_index(current[:-10], when_ns)


_MAX_MESSAGE_RECORDS = 3
_MAX_MESSAGE_CHARS = 1024


@dataclass(slots=True)
class _Rejection:
    position: int
    reasons: list[Violation]
    kind: str


class IngestConsumer:
    """The :class:`~receiver.pipeline.LogsConsumer` that stores audit events durably.

    Lifecycle: ``await start()``, then ``consume_logs`` / ``reject_records`` from any
    number of concurrent requests, ``ready()`` for readiness, ``await force_flush()``, and an
    idempotent ``await shutdown(timeout_s)``.
    """

    def __init__(
        self,
        es: AsyncElasticsearch,
        spool: Spool,
        settings: IngestSettings | None = None,
        *,
        sealer: Sealer | None = None,
        schema: Schema | None = None,
        close_client: bool = False,
    ) -> None:
        self.settings = settings or IngestSettings()
        s = self.settings
        self._es = es
        self._close_client = close_client
        self._sealer = sealer
        self._schema = schema or load_schema()
        self.native_plan = native_plan(self._schema, leaf=sealer is not None)
        """The decoder's plan: records it covers arrive with their write prepared."""
        self.writer = BulkWriter(
            es,
            BulkSettings(
                max_docs=s.bulk_max_docs,
                max_bytes=s.bulk_max_bytes,
                timeout_s=s.bulk_timeout_s,
                max_attempts=s.bulk_max_attempts,
                wait_for_active_shards=s.wait_for_active_shards,
            ),
            observe=_observe_bulk,
        )
        self._templates = TemplateGate(es, s.bulk_timeout_s, template_settings_of(s))
        handoff = SealHandoff(sealer, s.retry_after_s) if sealer is not None else None
        self.router = Router(
            self.writer,
            spool,
            self._templates,
            s,
            after_write=handoff,
            before_write=handoff.intend if handoff is not None else None,
        )
        self.batcher = Batcher(self.router.store, s)
        self._dead_letters = DeadLetters(self.batcher.submit)
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._closing = False
        self._closed = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool (replaying what a previous run left), install templates, run."""
        if self._started:
            return
        await self.router.open()
        await self._templates.ensure()  # now if Elasticsearch answers, else before a write
        sealer_start = getattr(self._sealer, "start", None)
        if sealer_start is not None:
            await sealer_start()
        sealer_stats = getattr(self._sealer, "stats", None)
        if sealer_stats is not None:
            metrics.observe_sealer(sealer_stats)
        self._tasks = [self.batcher.start(), self.router.start()]
        self._started = True

    def ready(self) -> bool:
        """True while new data can be made durable (ES or spool room), for ``/readyz``."""
        if not self._started or self._closing:
            return False
        if any(t.done() for t in self._tasks):
            return False
        # Unready while the spool refuses batches; room freed by the replay clears it.
        return not self.router.refusing

    def sealing_stuck(self) -> tuple[bool, str]:
        """``(True, why)`` when stored events are not being sealed (see the sealer's
        ``stuck``); ``(False, "")`` when sealing is fine or off."""
        probe = getattr(self._sealer, "stuck", None)
        if probe is None:
            return False, ""
        stuck, why = probe()
        return bool(stuck), str(why)

    @property
    def spooling(self) -> bool:
        """New batches currently go to the spool (it is not empty, or ES is unavailable)."""
        return self.router.spooling

    async def force_flush(self) -> None:
        """Send what waits for coalescing now and wait until every batch is durable."""
        await self.batcher.force_flush()

    async def wait_drained(self, timeout_s: float) -> bool:
        """Wait until the spool is empty and batches go to ES again (tests, shutdown)."""
        return await self.router.wait_drained(timeout_s)

    async def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop taking data, finish in-flight batches within ``timeout_s``, close. Idempotent."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            if self._started:
                try:
                    await asyncio.wait_for(self.force_flush(), timeout_s)
                except TimeoutError:
                    _log.warning("shutdown: batches still in flight after %.1f s", timeout_s)
                await self.batcher.close(
                    Unavailable("the receiver is shutting down", self.settings.retry_after_s)
                )
                await self.router.close()
                sealer_stop = getattr(self._sealer, "shutdown", None)
                if sealer_stop is not None:
                    await sealer_stop(timeout_s)
            if self._close_client:
                await self._es.close()
        finally:
            self._closed.set()

    # -- the LogsConsumer interface -------------------------------------------

    async def consume_logs(self, records: list[LogRecordData]) -> IngestResult:
        """Validate, store durably, and say what was rejected and why.

        Positions in the message are 0-based indexes into ``records``.
        """
        self._check_open()
        received_ns = time.time_ns()
        rejections: list[_Rejection] = []
        events: list[BulkItem] = []
        positions: list[int] = []
        dead: list[BulkItem] = []
        prepared = list(map(_PREPARED, records))
        every = None not in prepared
        if every:  # the decoder prepared every record: the usual case
            from_encoded = BulkItem.from_encoded
            events = [from_encoded(*p, record=r) for p, r in zip(prepared, records, strict=True)]
            positions = list(range(len(records)))
        for pos, record in () if every else enumerate(records):
            if record.prepared is not None:
                events.append(_from_prepared(record, record.prepared))
                positions.append(pos)
                continue
            item, violations = self._prepare(record, received_ns)
            if item is not None:
                events.append(item)
                positions.append(pos)
                continue
            rejections.append(_Rejection(pos, violations, "validation"))
            dead.append(
                rejected_item(
                    "validation",
                    violations,
                    received_ns=received_ns,
                    record=record,
                    content_hash=_safe_hash(record),
                )
            )
        if events:
            self._place(records, events, positions, rejections, dead, received_ns)
        results = await self.batcher.submit([*events, *dead]) if events or dead else []
        await self._dead_letters.settle(dead, results[len(events) :])

        followups: list[BulkItem] = []
        # Usually every event was created: nothing to follow up, seen at C speed.
        created = results[: len(events)].count(CREATED) == len(events)
        for item, pos, result in () if created else zip(events, positions, results, strict=False):
            if result.status is ItemStatus.CONFLICT or result.status is ItemStatus.MAPPING:
                reason, letter = refusal(item, result, received_ns)
                rejections.append(_Rejection(pos, [reason], reason.rule))
                followups.append(letter)
        await self._dead_letters.write(followups)
        for r in rejections:
            metrics.RECORDS_REJECTED.labels(signal="logs", reason=_reason_label(r)).inc()
        return _result(len(records), rejections)

    async def reject_records(
        self,
        records: Sequence[LogRecordData],
        reasons: Sequence[str | Violation | Sequence[Violation]],
    ) -> None:
        """Dead-letter records the servers refused while decoding (kind ``decode``).

        ``reasons[i]`` explains ``records[i]``: a message, a Violation or a list of them.
        Returns once the dead-letter documents are durable.
        """
        self._check_open()
        if len(reasons) != len(records):
            raise ValueError(f"{len(records)} records but {len(reasons)} reasons")
        received_ns = time.time_ns()
        await self._dead_letters.write(
            [
                rejected_item(
                    "decode",
                    _as_violations(reason),
                    received_ns=received_ns,
                    record=record,
                    content_hash=_safe_hash(record),
                )
                for record, reason in zip(records, reasons, strict=True)
            ]
        )

    def _place(
        self,
        records: list[LogRecordData],
        events: list[BulkItem],
        positions: list[int],
        rejections: list[_Rejection],
        dead: list[BulkItem],
        received_ns: int,
    ) -> None:
        """Choose each event's daily index, and refuse events whose day is out of bounds.

        One copy per event id across all days: an event whose id is a UUIDv7 (what the
        SDKs mint) is stored in the daily index of the id's own embedded time, not of its
        timestamp, so the same id always meets itself in one index, where ``create``
        answers 409 (same content: a duplicate; other content: a conflict, dead-lettered).
        The schema accepts no other emitted id; an id derived from the content (a
        UUIDv8, time included) keeps the index of the event's time, which it encodes.

        The day chosen must not be older than ``max_event_age_days`` nor later than the
        schema's ``max_future_s``: without these bounds one writer could create an index
        for every day since the schema's earliest date. Those events are refused with the
        reason and dead-lettered.
        """
        days = self.settings.max_event_age_days
        cutoff = received_ns - days * _NS_PER_DAY if days else 0
        future = received_ns + self._schema.limits.max_future_s * 1_000_000_000
        keep: list[int] = []
        for k, (item, pos) in enumerate(zip(events, positions, strict=True)):
            id_ms = _uuid7_ms(item.doc_id)
            if id_ms is not None:
                when = id_ms * 1_000_000
                what = "its event id's UUIDv7 time"
            else:
                record = records[pos]
                when = record.time_unix_nano or record.observed_time_unix_nano
                what = "its event time"
            if cutoff <= when <= future:
                if id_ms is not None:
                    item.move_to(_index_for(item.index, when))
                keep.append(k)
                continue
            if when > future:
                message = (
                    f"{what} is more than max_future_s ({self._schema.limits.max_future_s} s) "
                    "ahead of the receive time; refused"
                )
            else:
                message = (
                    f"{what} is {(received_ns - when) / _NS_PER_DAY:.0f} days old, older than "
                    f"max_event_age_days ({days}); refused"
                )
            reason = Violation("time_unix_nano", "max_event_age", message)
            rejections.append(_Rejection(pos, [reason], "validation"))
            dead.append(
                rejected_item(
                    "validation",
                    [reason],
                    received_ns=received_ns,
                    record=records[pos],
                    content_hash=item.content_hash,
                )
            )
        if len(keep) < len(events):
            events[:] = [events[k] for k in keep]
            positions[:] = [positions[k] for k in keep]

    def _check_open(self) -> None:
        if not self._started:
            raise Unavailable("the ingest pipeline is not started", self.settings.retry_after_s)
        if self._closing:
            raise Unavailable("the receiver is shutting down", self.settings.retry_after_s)

    def _prepare(
        self, record: LogRecordData, received_ns: int
    ) -> tuple[BulkItem | None, list[Violation]]:
        violations = validate(record, now_ns=received_ns, schema=self._schema)
        if violations:
            return None, violations
        try:
            # The same write the native decoder prepares, built in Python; only the bytes
            # are kept (see BulkItem.compact).
            prepared = prepare_in_python(
                record,
                received_ns=received_ns,
                schema=self._schema,
                leaf=self._sealer is not None,
            )
            return _from_prepared(record, prepared), []
        except Exception as exc:  # hostile input the validator let through: refuse, keep it
            _log.exception("could not build the document of a valid record")
            return None, [
                Violation("record", "document", f"could not build the document: {exc!r}"[:300])
            ]


def _observe_bulk(duration_s: float, docs: int) -> None:
    metrics.BULK_DURATION.observe(duration_s)
    metrics.BULK_DOCS.observe(docs)


def _from_prepared(record: LogRecordData, prepared: Prepared) -> BulkItem:
    """The item of a record whose write the decoder prepared (see receiver.ingest.prepare)."""
    return BulkItem.from_encoded(*prepared, record=record)


def _safe_hash(record: LogRecordData) -> str | None:
    try:
        return content_hash(record)
    except Exception:  # cyclic or otherwise unencodable: the dead letter still keeps it
        return None


def _as_violations(reason: str | Violation | Sequence[Violation]) -> list[Violation]:
    if isinstance(reason, Violation):
        return [reason]
    if isinstance(reason, str):
        return [Violation("record", "decode", reason)]
    return [
        v if isinstance(v, Violation) else Violation("record", "decode", str(v)) for v in reason
    ]


def _reason_label(rejection: _Rejection) -> str:
    if rejection.kind != "validation" or not rejection.reasons:
        return rejection.kind
    return rejection.reasons[0].rule


def _result(total: int, rejections: list[_Rejection]) -> IngestResult:
    if not rejections:
        return IngestResult(accepted=total, rejected=0)
    rejections.sort(key=lambda r: r.position)
    parts = [
        f"record {r.position}: {summarize(r.reasons, limit=2)}"
        for r in rejections[:_MAX_MESSAGE_RECORDS]
    ]
    more = len(rejections) - _MAX_MESSAGE_RECORDS
    message = f"{len(rejections)} of {total} records rejected: " + "; ".join(parts)
    if more > 0:
        message += f"; (+{more} more records)"
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[: _MAX_MESSAGE_CHARS - 3] + "..."
    return IngestResult(
        accepted=total - len(rejections), rejected=len(rejections), error_message=message
    )


def build_consumer(config: Any, *, sealer: Sealer | None = None) -> IngestConsumer:
    """The ingest consumer for the receiver's configuration object.

    Reads the connection (``es_url``, ``es_api_key`` ...: :mod:`indexer.es_client`),
    ``spool_dir``, ``spool_max_bytes``, ``bulk_max_docs`` and
    ``bulk_flush_interval_ms``, plus ``bulk_max_bytes``, ``bulk_timeout_s`` and
    ``max_inflight_bulks`` when the configuration has them (defaults otherwise).
    """
    settings = IngestSettings.of(config)
    es = async_client(
        EsConnection.from_config(config),
        request_timeout=settings.bulk_timeout_s,
        retry_on_timeout=False,
        max_retries=0,
        # Bulk answers carry one entry per document: parse them with orjson. Bulk bodies
        # are NDJSON bytes already: send them without the stock serializer's copies.
        serializers={
            "application/json": OrjsonSerializer(),
            "application/x-ndjson": PreEncodedNdjson(),
        },
    )
    spool = Spool(
        settings.spool_dir, settings.spool_max_bytes, retry_after_s=settings.retry_after_s
    )
    if sealer is None:
        from receiver.sealing.sealer import build_sealer

        sealer = build_sealer(config, es)
    return IngestConsumer(es, spool, settings, sealer=sealer, close_client=True)
