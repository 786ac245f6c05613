"""The durable ingest behind the OTLP servers: validate -> build document -> write -> ack.

::

    consume_logs(records)
      |-- validate each record; refused ones become dead-letter documents
      |-- build the stored document of each accepted one (event id, content hash)
      v
    coalescer: concurrent requests share one _bulk (bulk_max_docs, bulk_max_bytes,
      |        bulk_flush_interval_ms); each request resumes when its documents are durable
      v
    route:  spool empty and ES answering -> BulkWriter (op_type=create, _id = event id)
      |                                      409 same hash: already stored (success)
      |                                      409 other hash: conflict -> rejected + dead letter
      |                                      mapping error: rejected + dead letter
      |                                      unavailable / slower than bulk_timeout_s -> spool
      |     spool not empty (or ES down)  -> append to the spool (fsync) = durable
      v
    sealer.on_durable(stored, created)      after they are in Elasticsearch

Ordering: while the spool holds anything, new batches are appended to it too, behind
what is already there, until the background replayer has drained it. So events reach
Elasticsearch in the order they were acknowledged, and one replayer is the only writer of
spooled data. The price is that new batches also wait for the replay while it lasts; the
acknowledgement itself only waits for the fsync.

Exactly once: documents are created with deterministic ids; a replay after a crash between
the Elasticsearch acknowledgement and the spool commit gets 409 with the same content hash,
which counts as stored.

The sealer hook sees every event confirmed in Elasticsearch by a write, including ones
that were already stored (409 with the same content): a replay after a crash must not
leave an event unsealed, so the sealer deduplicates by event id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import struct
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Protocol

import orjson
from elastic_transport import TransportError
from elasticsearch import AsyncElasticsearch
from elasticsearch import exceptions as es_exc
from elasticsearch.serializer import OrjsonSerializer

from indexer.bulk import (
    CREATED,
    BulkItem,
    BulkSettings,
    BulkWriter,
    ItemResult,
    ItemStatus,
    PreEncodedNdjson,
)
from indexer.deadletter import rejected_item
from indexer.templates import registered_templates
from otel_audit.document import content_hash
from otel_audit.integrity import leaf_hash_of_event
from otel_audit.record import LogRecordData
from otel_audit.schema import Schema, load_schema
from otel_audit.validate import Violation, summarize, validate
from receiver import metrics
from receiver.config import ReceiverConfig
from receiver.errors import Unavailable
from receiver.ingest.prepare import Prepared, native_plan, prepare_in_python
from receiver.ingest.spool import Frame, Spool, SpoolFull
from receiver.pipeline import IngestResult
from receiver.sealing.state import Entries
from receiver.waiting import wait_event

__all__ = [
    "IngestConsumer",
    "IngestSettings",
    "Sealer",
    "build_consumer",
]

_log = logging.getLogger(__name__)

_COUNT = struct.Struct(">I")
# The sealer takes a write's events as columns, read off the items in C.
_INDEX = attrgetter("index")
_DOC_ID = attrgetter("doc_id")
_LEAF_HASH = attrgetter("leaf_hash")
_TIMESTAMP = attrgetter("timestamp")
_CONTENT_HASH = attrgetter("content_hash")
_PREPARED = attrgetter("prepared")
_SPOOL_VERSION = 1
_MAX_MESSAGE_RECORDS = 3
_MAX_MESSAGE_CHARS = 1024


class Sealer(Protocol):
    """What the integrity chain plugs in behind the write (sync or async ``on_durable``)."""

    def on_durable(self, stored: Entries, created: Sequence[bool]) -> Awaitable[None] | None:
        """Called once per write with the events Elasticsearch confirmed: their index,
        id, leaf hash and ``@timestamp``, and whether this write created each one (False
        when it found it already stored, a 409 with the same content)."""
        ...


def _receiver_default(name: str) -> Any:
    # The receiver configuration holds the defaults of the keys it shares with these
    # settings; reading them here keeps one place for each default.
    return next(f.default for f in dataclasses.fields(ReceiverConfig) if f.name == name)


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """Knobs of the ingest pipeline; units in the names.

    Keys the receiver configuration also has take their defaults from it.
    """

    es_url: str = _receiver_default("es_url")
    """Elasticsearch base URL."""
    spool_dir: str = _receiver_default("spool_dir")
    """Directory of the local spool."""
    spool_max_bytes: int = _receiver_default("spool_max_bytes")
    """Spool size limit; when it is reached while ES is down, requests get Unavailable."""
    bulk_max_docs: int = _receiver_default("bulk_max_docs")
    """Documents per ``_bulk`` request at most (requests are coalesced up to this)."""
    bulk_max_bytes: int = _receiver_default("bulk_max_bytes")
    """Body bytes per ``_bulk`` request at most."""
    bulk_flush_interval_ms: float = _receiver_default("bulk_flush_interval_ms")
    """How long a batch waits for more documents from concurrent requests."""
    bulk_timeout_s: float = _receiver_default("bulk_timeout_s")
    """A ``_bulk`` slower than this counts as ES unavailable: the batch is spooled."""
    bulk_max_attempts: int = 5
    """Attempts per document on 429 / 5xx item answers before spooling it."""
    max_inflight_bulks: int = _receiver_default("max_inflight_bulks")
    """``_bulk`` requests in flight at once (the next batch fills while one is sent)."""
    retry_after_s: float = _receiver_default("retry_after_s")
    """Retry delay suggested to clients when neither ES nor the spool can take data."""
    replay_backoff_max_s: float = 5.0
    """Longest wait between replay attempts while ES stays unavailable."""

    def __post_init__(self) -> None:
        if not self.es_url.startswith(("http://", "https://")):
            raise ValueError(f"es_url: {self.es_url!r} must start with http:// or https://")
        for name in ("spool_max_bytes", "bulk_max_docs", "bulk_max_bytes", "max_inflight_bulks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        for name in ("bulk_timeout_s", "retry_after_s", "replay_backoff_max_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.bulk_flush_interval_ms < 0:
            raise ValueError("bulk_flush_interval_ms: must not be negative")


@dataclass(slots=True, eq=False)
class _Request:
    items: list[BulkItem]
    future: asyncio.Future[list[ItemResult]]
    nbytes: int


@dataclass(slots=True)
class _Rejection:
    position: int
    reasons: list[Violation]
    kind: str


def _encode_spool(items: Sequence[BulkItem]) -> bytes:
    body = orjson.dumps(
        {
            "v": _SPOOL_VERSION,
            # The document's bytes as they are: compacted items have no dict to serialize.
            "items": [
                [it.index, it.doc_id, it.content_hash, orjson.Fragment(it.source_json())]
                for it in items
            ],
        }
    )
    return _COUNT.pack(len(items)) + body


def _decode_spool(payload: bytes) -> list[BulkItem]:
    raw = orjson.loads(payload[_COUNT.size :])
    if raw.get("v") != _SPOOL_VERSION:
        raise ValueError(f"spool frame version {raw.get('v')!r} is not {_SPOOL_VERSION}")
    return [
        BulkItem(index=i, doc_id=d, document=doc, content_hash=h) for i, d, h, doc in raw["items"]
    ]


def _spool_item_count(payload: bytes) -> int:
    return int(_COUNT.unpack_from(payload)[0])


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
        self._spool = spool
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
            ),
            observe=_observe_bulk,
        )
        self._pending: deque[_Request] = deque()
        self._pending_docs = 0
        self._pending_bytes = 0
        self._first_pending_at = 0.0
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._slots = asyncio.Semaphore(s.max_inflight_bulks)
        self._inflight: set[asyncio.Task[None]] = set()
        self._route_lock = asyncio.Lock()
        self._template_lock = asyncio.Lock()
        self._templates_ok = False
        self._spool_mode = False
        self._replay_wakeup = asyncio.Event()
        self._spool_items = 0
        self._spool_refused = False
        self._flush_now = False
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._closing = False
        self._closed = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool (replaying what a previous run left), install templates, run."""
        if self._started:
            return
        report = await asyncio.to_thread(self._spool.open)
        if report.frames:
            self._spool_items = await asyncio.to_thread(self._count_spooled)
            self._enter_spool_mode()
        self._update_spool_gauges()
        await self._ensure_templates()
        sealer_start = getattr(self._sealer, "start", None)
        if sealer_start is not None:
            await sealer_start()
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="ingest-flush"),
            asyncio.create_task(self._replay_loop(), name="ingest-replay"),
        ]
        self._started = True

    def _count_spooled(self) -> int:
        total = sum(_spool_item_count(f.payload) for f in self._spool.read())
        self._spool.rewind()
        return total

    def ready(self) -> bool:
        """True while new data can be made durable (ES or spool room), for ``/readyz``."""
        if not self._started or self._closing:
            return False
        if any(t.done() for t in self._tasks):
            return False
        # Unready while the spool refuses batches; room freed by the replay clears it.
        return not (self._spool_mode and self._spool_refused)

    @property
    def spooling(self) -> bool:
        """New batches currently go to the spool (it is not empty, or ES is unavailable)."""
        return self._spool_mode

    async def force_flush(self) -> None:
        """Send what waits for coalescing now and wait until every batch is durable."""
        self._flush_now = True
        self._full.set()
        try:
            while self._pending or self._inflight:
                if self._inflight:
                    await asyncio.wait(set(self._inflight))
                else:
                    await asyncio.sleep(0.001)
        finally:
            self._flush_now = False

    async def wait_drained(self, timeout_s: float) -> bool:
        """Wait until the spool is empty and batches go to ES again (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._spool_mode:
            if time.monotonic() >= deadline:
                return False
            self._replay_wakeup.set()
            await asyncio.sleep(0.05)
        return True

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
                for request in self._pending:
                    if not request.future.done():
                        request.future.set_exception(
                            Unavailable(
                                "the receiver is shutting down", self.settings.retry_after_s
                            )
                        )
                self._pending.clear()
                for task in [*self._tasks, *self._inflight]:
                    task.cancel()
                await asyncio.gather(*self._tasks, *self._inflight, return_exceptions=True)
                await asyncio.to_thread(self._spool.close)
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
        results = await self._submit([*events, *dead]) if events or dead else []
        await self._settle_dead_letters(dead, results[len(events) :], received_ns)

        followups: list[BulkItem] = []
        # Usually every event was created: nothing to follow up, seen at C speed.
        created = results[: len(events)].count(CREATED) == len(events)
        for item, pos, result in () if created else zip(events, positions, results, strict=False):
            if result.status is ItemStatus.CONFLICT:
                reason = Violation("audit.event.id", "conflict", result.detail)
                rejections.append(_Rejection(pos, [reason], "conflict"))
                followups.append(
                    rejected_item(
                        "conflict",
                        [reason],
                        received_ns=received_ns,
                        record=item.record,
                        content_hash=item.content_hash,
                        stored_content_hash=result.stored_hash,
                        event_id=item.doc_id,
                    )
                )
            elif result.status is ItemStatus.MAPPING:
                reason = Violation("document", "mapping", result.detail)
                rejections.append(_Rejection(pos, [reason], "mapping"))
                followups.append(
                    rejected_item(
                        "mapping",
                        [reason],
                        received_ns=received_ns,
                        record=item.record,
                        content_hash=item.content_hash,
                        event_id=item.doc_id,
                        document=item.document,
                    )
                )
        if followups:
            await self._settle_dead_letters(followups, await self._submit(followups), received_ns)
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
        dead = [
            rejected_item(
                "decode",
                _as_violations(reason),
                received_ns=received_ns,
                record=record,
                content_hash=_safe_hash(record),
            )
            for record, reason in zip(records, reasons, strict=True)
        ]
        if dead:
            await self._settle_dead_letters(dead, await self._submit(dead), received_ns)

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

    async def _settle_dead_letters(
        self, items: list[BulkItem], results: list[ItemResult], received_ns: int
    ) -> None:
        """A dead-letter document that ES refuses is retried once in its barest form."""
        retry = [
            _bare(item, result.detail)
            for item, result in zip(items, results, strict=False)
            if result.status is ItemStatus.MAPPING
        ]
        if not retry:
            return
        for item, result in zip(retry, await self._submit(retry), strict=False):
            if result.status is ItemStatus.MAPPING:
                # Last resort: the log line holds the record; never swallowed silently.
                _log.error(
                    "dead-letter document refused by Elasticsearch (%s): %s",
                    result.detail,
                    orjson.dumps(item.document).decode("utf-8", "replace"),
                )

    # -- coalescing -----------------------------------------------------------

    async def _submit(self, items: list[BulkItem]) -> list[ItemResult]:
        """Queue ``items`` for the next bulk; resume when they are durable (or spooled)."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        nbytes = sum(map(len, BulkItem.encoded_all(items)))
        request = _Request(items, loop.create_future(), nbytes)
        if not self._pending:
            self._first_pending_at = loop.time()
        self._pending.append(request)
        self._pending_docs += len(items)
        self._pending_bytes += nbytes
        if (
            self._pending_docs >= self.settings.bulk_max_docs
            or self._pending_bytes >= self.settings.bulk_max_bytes
        ):
            self._full.set()
        self._wakeup.set()
        return await request.future

    def _take(self) -> list[_Request]:
        s = self.settings
        batch: list[_Request] = []
        docs = nbytes = 0
        while self._pending:
            nxt = self._pending[0]
            if batch and (
                docs + len(nxt.items) > s.bulk_max_docs or nbytes + nxt.nbytes > s.bulk_max_bytes
            ):
                break
            self._pending.popleft()
            batch.append(nxt)
            docs += len(nxt.items)
            nbytes += nxt.nbytes
        self._pending_docs -= docs
        self._pending_bytes -= nbytes
        if not self._pending:
            self._wakeup.clear()
        else:
            self._first_pending_at = asyncio.get_running_loop().time()
        if self._pending_docs < s.bulk_max_docs and self._pending_bytes < s.bulk_max_bytes:
            self._full.clear()
        return batch

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        linger_s = self.settings.bulk_flush_interval_ms / 1000.0
        while True:
            await self._wakeup.wait()
            await self._slots.acquire()
            remaining = self._first_pending_at + linger_s - loop.time()
            if remaining > 0 and not self._full.is_set() and not self._flush_now:
                await wait_event(self._full, remaining)
            batch = self._take()
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._run_batch(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _run_batch(self, batch: list[_Request]) -> None:
        try:
            items = [it for r in batch for it in r.items]
            try:
                results = await self._store(items)
            except BaseException as exc:
                error = exc if isinstance(exc, Exception) else Unavailable("cancelled")
                if not isinstance(error, Unavailable):
                    _log.exception("storing a batch failed")
                    error = Unavailable(f"storing failed: {exc!r}", self.settings.retry_after_s)
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(error)
                if not isinstance(exc, Exception):
                    raise
                return
            start = 0
            for r in batch:
                end = start + len(r.items)
                if not r.future.done():
                    r.future.set_result(results[start:end])
                start = end
        finally:
            self._slots.release()

    # -- routing: Elasticsearch or spool --------------------------------------

    async def _store(self, items: list[BulkItem]) -> list[ItemResult]:
        if self._spool_mode:
            async with self._route_lock:
                if self._spool_mode:
                    await self._append_to_spool(items)
                    return [ItemResult(ItemStatus.SPOOLED)] * len(items)
        results = await self._write_es(items)
        await self._seal(items, results)
        failed = [i for i, r in enumerate(results) if r.status is ItemStatus.UNAVAILABLE]
        if failed:
            _log.warning(
                "Elasticsearch could not take %d documents (%s); spooling them",
                len(failed),
                results[failed[0]].detail,
            )
            async with self._route_lock:
                await self._append_to_spool([items[i] for i in failed])
                self._enter_spool_mode()
            for i in failed:
                results[i] = ItemResult(ItemStatus.SPOOLED)
        return results

    async def _write_es(self, items: list[BulkItem]) -> list[ItemResult]:
        if not await self._ensure_templates():
            return [ItemResult(ItemStatus.UNAVAILABLE, "index templates not installed")] * len(
                items
            )
        return await self.writer.write(items)

    async def _ensure_templates(self) -> bool:
        # Writing before the templates exist would create indices with guessed mappings.
        if self._templates_ok:
            return True
        async with self._template_lock:
            if self._templates_ok:
                return True
            try:
                for name, body in registered_templates().items():
                    await asyncio.wait_for(
                        self._es.indices.put_index_template(name=name, **body),
                        self.settings.bulk_timeout_s,
                    )
            except (TimeoutError, TransportError, es_exc.ApiError, OSError) as exc:
                _log.warning("cannot install index templates yet: %s", exc)
                return False
            self._templates_ok = True
            return True

    async def _append_to_spool(self, items: list[BulkItem]) -> None:
        payload = _encode_spool(items)
        try:
            await asyncio.to_thread(self._spool.append, payload)
        except SpoolFull:
            self._spool_refused = True
            raise
        self._spool_refused = False
        self._spool_items += len(items)
        metrics.RECORDS_SPOOLED.inc(len(items))
        self._update_spool_gauges()

    def _enter_spool_mode(self) -> None:
        self._spool_mode = True
        self._replay_wakeup.set()

    def _update_spool_gauges(self) -> None:
        metrics.SPOOL_DEPTH_BYTES.set(self._spool.used_bytes)
        metrics.SPOOL_DEPTH_RECORDS.set(self._spool_items)

    async def _seal(self, items: Sequence[BulkItem], results: Sequence[ItemResult]) -> None:
        if self._sealer is None:
            return
        chosen: Sequence[BulkItem] = items
        created: list[bool] = [True] * len(items)
        # Usually every item of the write was created: see that at C speed.
        if results.count(CREATED) != len(results) or None in map(_CONTENT_HASH, items):
            pairs = [
                (it, r.status is ItemStatus.CREATED)
                for it, r in zip(items, results, strict=True)
                if it.content_hash is not None and r.status.stored
            ]
            chosen = [it for it, _ in pairs]
            created = [c for _, c in pairs]
        if not chosen:
            return
        for it in chosen:
            if it.leaf_hash is None:
                # Not hashed while written (an item from before sealing was on): hash the
                # document Elasticsearch holds, as the write path would have.
                doc = it.document
                it.leaf_hash = leaf_hash_of_event(doc)
                ts = doc.get("@timestamp")
                it.timestamp = ts if isinstance(ts, str) else ""
        stored = Entries(
            list(map(_INDEX, chosen)),
            list(map(_DOC_ID, chosen)),
            list(map(_LEAF_HASH, chosen)),
            list(map(_TIMESTAMP, chosen)),
        )
        try:
            outcome = self._sealer.on_durable(stored, created)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception as exc:
            # Stored but not anchored: answer retryably. The client's retry meets a 409
            # with the same content, which reaches the sealer again and is journaled then.
            _log.exception("sealer failed for %d stored events", len(stored))
            raise Unavailable(
                f"events stored but not sealed ({exc}); retry", self.settings.retry_after_s
            ) from exc

    # -- replay ---------------------------------------------------------------

    async def _replay_loop(self) -> None:
        backoff_s = 0.1
        max_bytes = self.settings.bulk_max_bytes
        while True:
            await self._replay_wakeup.wait()
            frames = await asyncio.to_thread(self._spool.read, 64, max_bytes)
            if not frames:
                async with self._route_lock:
                    if self._spool.is_empty:
                        self._spool_mode = False
                        self._replay_wakeup.clear()
                        _log.info("spool drained; writing to Elasticsearch directly again")
                continue
            try:
                replayed = await self._replay(frames, backoff_s)
            except Exception:
                # Keep the frames (never drop them) and keep trying; the log says why.
                _log.exception("spool replay failed; retrying")
                replayed = False
            if replayed:
                backoff_s = 0.1
            else:
                await asyncio.to_thread(self._spool.rewind)
                await asyncio.sleep(backoff_s)
                backoff_s = min(self.settings.replay_backoff_max_s, backoff_s * 2)

    async def _replay(self, frames: list[Frame], backoff_s: float) -> bool:
        """Send ``frames`` to ES; commit them when everything in them is stored."""
        items: list[BulkItem] = []
        for frame in frames:
            items.extend(_decode_spool(frame.payload))
        results = await self._write_es(items)
        if any(r.status is ItemStatus.UNAVAILABLE for r in results):
            detail = next(r.detail for r in results if r.status is ItemStatus.UNAVAILABLE)
            _log.info(
                "spool replay waits for Elasticsearch (%s); retry in %.1f s", detail, backoff_s
            )
            return False
        received_ns = time.time_ns()
        dead: list[BulkItem] = []
        for item, result in zip(items, results, strict=True):
            if result.status not in (ItemStatus.CONFLICT, ItemStatus.MAPPING):
                continue
            kind = "conflict" if result.status is ItemStatus.CONFLICT else "mapping"
            rule_field = "audit.event.id" if kind == "conflict" else "document"
            reason = Violation(rule_field, kind, result.detail)
            _log.warning("replayed event %s refused: %s", item.doc_id, result.detail)
            metrics.RECORDS_REJECTED.labels(signal="logs", reason=kind).inc()
            dead.append(
                rejected_item(
                    kind,
                    [reason],
                    received_ns=received_ns,
                    original=item.document,
                    content_hash=item.content_hash,
                    stored_content_hash=result.stored_hash,
                    event_id=item.doc_id,
                )
            )
        if dead:
            dead_results = await self._write_es(dead)
            if any(r.status is ItemStatus.UNAVAILABLE for r in dead_results):
                return False
            for item, r in zip(dead, dead_results, strict=True):
                if r.status is ItemStatus.MAPPING:
                    bare = _bare(item, r.detail)
                    (again,) = await self._write_es([bare])
                    if again.status is ItemStatus.UNAVAILABLE:
                        return False
                    if again.status is ItemStatus.MAPPING:
                        _log.error(
                            "dead-letter document refused by Elasticsearch (%s): %s",
                            again.detail,
                            orjson.dumps(bare.document).decode("utf-8", "replace"),
                        )
        await self._seal(items, results)
        await asyncio.to_thread(self._spool.commit, frames)
        self._spool_refused = False
        self._spool_items = max(0, self._spool_items - len(items))
        self._update_spool_gauges()
        return True


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


def _bare(item: BulkItem, why: str) -> BulkItem:
    """The dead-letter document reduced to fields that cannot fail: original as JSON text."""
    doc = item.document
    bare = {
        "@timestamp": doc.get("@timestamp"),
        "kind": doc.get("kind"),
        "reasons": [
            *doc.get("reasons", []),
            {"field": "dead_letter", "rule": "mapping", "message": why[:1000]},
        ],
        "original_format": "json_text",
        "original": {"json": orjson.dumps(doc).decode("utf-8", "replace")},
    }
    return BulkItem(index=item.index, doc_id=item.doc_id + "-bare", document=bare)


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

    Reads ``es_url``, ``spool_dir``, ``spool_max_bytes``, ``bulk_max_docs`` and
    ``bulk_flush_interval_ms``, plus ``bulk_max_bytes``, ``bulk_timeout_s`` and
    ``max_inflight_bulks`` when the configuration has them (defaults otherwise).
    """
    defaults = IngestSettings()
    values = {
        name: getattr(config, name, getattr(defaults, name))
        for name in IngestSettings.__dataclass_fields__
    }
    settings = IngestSettings(**values)
    es = AsyncElasticsearch(
        settings.es_url,
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
