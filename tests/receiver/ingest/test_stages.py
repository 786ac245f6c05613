"""The ingest stages on their own, each ended with an in-memory store."""

from __future__ import annotations

import asyncio

import pytest

from indexer.bulk import BulkItem, ItemResult, ItemStatus
from receiver.errors import Unavailable
from receiver.ingest.batcher import Batcher
from receiver.ingest.deadletters import DeadLetters
from receiver.ingest.settings import IngestSettings


def _item(n: int) -> BulkItem:
    return BulkItem(index="i", doc_id=f"d{n}", document={"n": n}, content_hash=f"h{n}")


def test_concurrent_submissions_share_one_batch_and_get_their_own_results() -> None:
    batches: list[list[str]] = []

    async def store(items: list[BulkItem]) -> list[ItemResult]:
        batches.append([it.doc_id for it in items])
        return [ItemResult(ItemStatus.CREATED, it.doc_id) for it in items]

    async def go() -> list[list[ItemResult]]:
        batcher = Batcher(store, IngestSettings(bulk_flush_interval_ms=50, bulk_max_docs=100))
        batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.submit([_item(2 * n), _item(2 * n + 1)]) for n in range(5))
            )
        finally:
            await batcher.close(Unavailable("closing"))

    answers = asyncio.run(go())
    assert batches == [[f"d{n}" for n in range(10)]]
    assert [[r.detail for r in a] for a in answers] == [
        [f"d{2 * n}", f"d{2 * n + 1}"] for n in range(5)
    ]


def test_a_full_batch_goes_at_once_and_a_failed_store_fails_only_its_requests() -> None:
    async def store(items: list[BulkItem]) -> list[ItemResult]:
        if any(it.doc_id == "d0" for it in items):
            raise RuntimeError("disk on fire")
        return [ItemResult(ItemStatus.CREATED)] * len(items)

    async def go() -> tuple[BaseException | list[ItemResult], ...]:
        settings = IngestSettings(bulk_flush_interval_ms=10_000, bulk_max_docs=2)
        batcher = Batcher(store, settings)
        batcher.start()
        try:
            return tuple(
                await asyncio.wait_for(
                    asyncio.gather(
                        batcher.submit([_item(0), _item(1)]),
                        batcher.submit([_item(2), _item(3)]),
                        return_exceptions=True,
                    ),
                    5,
                )
            )
        finally:
            await batcher.close(Unavailable("closing"))

    failed, ok = asyncio.run(go())
    assert isinstance(failed, Unavailable) and "disk on fire" in str(failed)
    assert ok == [ItemResult(ItemStatus.CREATED)] * 2


def test_a_refused_dead_letter_is_written_again_in_its_barest_form() -> None:
    written: list[list[BulkItem]] = []

    async def write(items: list[BulkItem]) -> list[ItemResult]:
        written.append(items)
        if len(written) == 1:
            return [ItemResult(ItemStatus.MAPPING, "bad field")]
        return [ItemResult(ItemStatus.CREATED)]

    letter = BulkItem(index="r", doc_id="x", document={"kind": "validation", "reasons": []})
    assert asyncio.run(DeadLetters(write).write([letter])) is True
    bare = written[1][0]
    assert bare.doc_id == "x-bare" and bare.document["original_format"] == "json_text"
    assert bare.document["reasons"][-1]["message"] == "bad field"


@pytest.mark.parametrize("first", [ItemStatus.UNAVAILABLE, ItemStatus.MAPPING])
def test_dead_letters_not_durable_are_reported(first: ItemStatus) -> None:
    # Unavailable at once, or refused and then unavailable for the bare retry.
    async def unavailable_on_retry(items: list[BulkItem]) -> list[ItemResult]:
        status = first if items[0].doc_id == "x" else ItemStatus.UNAVAILABLE
        return [ItemResult(status)] * len(items)

    letter = BulkItem(index="r", doc_id="x", document={"kind": "decode", "reasons": []})
    assert asyncio.run(DeadLetters(unavailable_on_retry).write([letter])) is False
