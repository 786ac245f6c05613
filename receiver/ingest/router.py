"""Where a batch becomes durable: Elasticsearch, or the local spool while it is away.

::

    store(batch)
      spool empty and ES answering -> write to ES (op_type=create, _id = event id)
      |                                 created / 409 same hash   -> stored -> sealer
      |                                 409 other hash, mapping   -> reported to the caller
      |                                 unavailable / too slow    -> those items to the spool
      spool not empty (or ES down)  -> append to the spool (fsync) = durable

    replay loop (while the spool holds anything)
      read frames -> write to ES -> dead-letter what ES refused -> sealer -> commit frames

Ordering: while the spool holds anything, new batches are appended to it too, behind what
is already there, until the replayer has drained it. So events reach Elasticsearch in the
order they were acknowledged, and one replayer is the only writer of spooled data. The
price is that new batches also wait for the replay while it lasts; the acknowledgement
itself only waits for the fsync.

Exactly once: documents are created with deterministic ids; a replay after a crash between
the Elasticsearch acknowledgement and the spool commit gets 409 with the same content
hash, which counts as stored.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Sequence

import orjson

from indexer.bulk import BulkItem, BulkWriter, ItemResult, ItemStatus
from receiver import metrics
from receiver.ingest.deadletters import DeadLetters, refusal
from receiver.ingest.settings import IngestSettings
from receiver.ingest.spool import Frame, Spool, SpoolFull
from receiver.ingest.templates import TemplateGate

__all__ = ["AfterWrite", "BeforeWrite", "Router"]

_log = logging.getLogger(__name__)

_COUNT = struct.Struct(">I")
_SPOOL_VERSION = 1

AfterWrite = Callable[[Sequence[BulkItem], Sequence[ItemResult]], Awaitable[None]]
"""Called with every write Elasticsearch answered (the sealer's hand-off)."""
BeforeWrite = Callable[[Sequence[BulkItem]], Awaitable[Callable[[bool], None]]]
"""Called before a batch is sent to Elasticsearch (the sealer logs its intent); returns
the function called once the write and its ``after_write`` are over (True: both done)."""


def encode_frame(items: Sequence[BulkItem]) -> bytes:
    """A spool frame: the item count, then the items' index, id, hash and document."""
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


def decode_frame(payload: bytes) -> list[BulkItem]:
    """The items of a spool frame written by :func:`encode_frame`."""
    raw = orjson.loads(payload[_COUNT.size :])
    if raw.get("v") != _SPOOL_VERSION:
        raise ValueError(f"spool frame version {raw.get('v')!r} is not {_SPOOL_VERSION}")
    return [
        BulkItem(index=i, doc_id=d, document=doc, content_hash=h) for i, d, h, doc in raw["items"]
    ]


def frame_item_count(payload: bytes) -> int:
    """How many items a frame holds, without decoding it."""
    return int(_COUNT.unpack_from(payload)[0])


class Router:
    """Stores batches in Elasticsearch or the spool, and replays the spool in order."""

    def __init__(
        self,
        writer: BulkWriter,
        spool: Spool,
        templates: TemplateGate,
        settings: IngestSettings,
        *,
        after_write: AfterWrite | None = None,
        before_write: BeforeWrite | None = None,
    ) -> None:
        self._writer = writer
        self._spool = spool
        self._templates = templates
        self._settings = settings
        self._after_write = after_write
        self._before_write = before_write
        self._dead_letters = DeadLetters(self.write_es)
        self._lock = asyncio.Lock()
        self._spool_mode = False
        self._replay_wakeup = asyncio.Event()
        self._spool_items = 0
        self._spool_refused = False
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------

    async def open(self) -> None:
        """Open the spool; what a previous run left is replayed first."""
        report = await asyncio.to_thread(self._spool.open)
        if report.frames:
            self._spool_items = await asyncio.to_thread(self._count_spooled)
            self._enter_spool_mode()
        self._update_spool_gauges()

    def start(self) -> asyncio.Task[None]:
        """Run the replay loop; returns its task (done only if the loop died)."""
        self._task = asyncio.create_task(self._replay_loop(), name="ingest-replay")
        return self._task

    async def close(self) -> None:
        """Stop replaying and close the spool."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self._spool.close)

    def _count_spooled(self) -> int:
        total = sum(frame_item_count(f.payload) for f in self._spool.read())
        self._spool.rewind()
        return total

    @property
    def spooling(self) -> bool:
        """New batches currently go to the spool (it is not empty, or ES is unavailable)."""
        return self._spool_mode

    @property
    def refusing(self) -> bool:
        """The spool is full while it must take batches: nothing new can be made durable."""
        return self._spool_mode and self._spool_refused

    async def wait_drained(self, timeout_s: float) -> bool:
        """Wait until the spool is empty and batches go to ES again (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._spool_mode:
            if time.monotonic() >= deadline:
                return False
            self._replay_wakeup.set()
            await asyncio.sleep(0.05)
        return True

    # -- storing --------------------------------------------------------------

    async def store(self, items: list[BulkItem]) -> list[ItemResult]:
        """Make ``items`` durable: in ES when it answers, else in the spool (SPOOLED)."""
        if self._spool_mode:
            async with self._lock:
                if self._spool_mode:
                    await self._append_to_spool(items)
                    return [ItemResult(ItemStatus.SPOOLED)] * len(items)
        settle = await self._before_write(items) if self._before_write is not None else None
        handed_off = False
        try:
            results = await self.write_es(items)
            if self._after_write is not None:
                await self._after_write(items, results)
            handed_off = True
        finally:
            if settle is not None:
                settle(handed_off)
        failed = [i for i, r in enumerate(results) if r.status is ItemStatus.UNAVAILABLE]
        if failed:
            _log.warning(
                "Elasticsearch could not take %d documents (%s); spooling them",
                len(failed),
                results[failed[0]].detail,
            )
            async with self._lock:
                await self._append_to_spool([items[i] for i in failed])
                self._enter_spool_mode()
            for i in failed:
                results[i] = ItemResult(ItemStatus.SPOOLED)
        return results

    async def write_es(self, items: list[BulkItem]) -> list[ItemResult]:
        """One write to Elasticsearch (after the templates are in); never raises for it."""
        if not await self._templates.ensure():
            return [ItemResult(ItemStatus.UNAVAILABLE, "index templates not installed")] * len(
                items
            )
        return await self._writer.write(items)

    async def _append_to_spool(self, items: list[BulkItem]) -> None:
        payload = encode_frame(items)
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

    # -- replay ---------------------------------------------------------------

    async def _replay_loop(self) -> None:
        backoff_s = 0.1
        max_bytes = self._settings.bulk_max_bytes
        while True:
            await self._replay_wakeup.wait()
            frames = await asyncio.to_thread(self._spool.read, 64, max_bytes)
            if not frames:
                async with self._lock:
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
                backoff_s = min(self._settings.replay_backoff_max_s, backoff_s * 2)

    async def _replay(self, frames: list[Frame], backoff_s: float) -> bool:
        """Send ``frames`` to ES; commit them when everything in them is stored."""
        items: list[BulkItem] = []
        for frame in frames:
            items.extend(decode_frame(frame.payload))
        settle = await self._before_write(items) if self._before_write is not None else None
        handed_off = False
        try:
            handed_off = await self._replay_write(frames, items, backoff_s)
        finally:
            if settle is not None:
                settle(handed_off)
        return handed_off

    async def _replay_write(
        self, frames: list[Frame], items: list[BulkItem], backoff_s: float
    ) -> bool:
        results = await self.write_es(items)
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
            reason, letter = refusal(item, result, received_ns)
            _log.warning("replayed event %s refused: %s", item.doc_id, result.detail)
            metrics.RECORDS_REJECTED.labels(signal="logs", reason=reason.rule).inc()
            dead.append(letter)
        if not await self._dead_letters.write(dead):
            return False
        if self._after_write is not None:
            await self._after_write(items, results)
        await asyncio.to_thread(self._spool.commit, frames)
        self._spool_refused = False
        self._spool_items = max(0, self._spool_items - len(items))
        self._update_spool_gauges()
        return True
