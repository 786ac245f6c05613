"""Coalescing: concurrent requests share one ``_bulk``.

Each request's items wait until a batch is full (``bulk_max_docs`` / ``bulk_max_bytes``),
or ``bulk_flush_interval_ms`` has passed since the oldest waiting request, or someone asks
for a flush; then the batch goes to ``store`` (the router: Elasticsearch or the spool)
while the next one fills, at most ``max_inflight_bulks`` at once. Each request resumes
with its own items' results once the batch is durable, or with the batch's error.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from indexer.bulk import BulkItem, ItemResult
from receiver.errors import Unavailable
from receiver.ingest.settings import IngestSettings
from receiver.waiting import wait_event

__all__ = ["Batcher", "Store"]

_log = logging.getLogger(__name__)

Store = Callable[[list[BulkItem]], Awaitable[list[ItemResult]]]
"""Makes a batch durable and says what became of each item, in order."""


@dataclass(slots=True, eq=False)
class _Request:
    items: list[BulkItem]
    future: asyncio.Future[list[ItemResult]]
    nbytes: int


class Batcher:
    """Gathers items from concurrent :meth:`submit` calls into batches for ``store``.

    ``await start()`` runs the flush loop; ``close(error)`` fails what still waits.
    """

    def __init__(self, store: Store, settings: IngestSettings) -> None:
        self._store = store
        self._settings = settings
        self._pending: deque[_Request] = deque()
        self._pending_docs = 0
        self._pending_bytes = 0
        self._first_pending_at = 0.0
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_inflight_bulks)
        self._inflight: set[asyncio.Task[None]] = set()
        self._flush_now = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        """Run the flush loop; returns its task (done only if the loop died)."""
        self._task = asyncio.create_task(self._flush_loop(), name="ingest-flush")
        return self._task

    async def submit(self, items: list[BulkItem]) -> list[ItemResult]:
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
            self._pending_docs >= self._settings.bulk_max_docs
            or self._pending_bytes >= self._settings.bulk_max_bytes
        ):
            self._full.set()
        self._wakeup.set()
        return await request.future

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

    async def close(self, error: Unavailable) -> None:
        """Fail every request still waiting with ``error``; stop the loop and the batches."""
        for request in self._pending:
            if not request.future.done():
                request.future.set_exception(error)
        self._pending.clear()
        tasks = [t for t in (self._task, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _take(self) -> list[_Request]:
        s = self._settings
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
        linger_s = self._settings.bulk_flush_interval_ms / 1000.0
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
                    error = Unavailable(f"storing failed: {exc!r}", self._settings.retry_after_s)
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
