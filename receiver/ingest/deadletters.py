"""The one dead-letter path, for live ingest and spool replay alike.

A refused record (by validation, by decoding, or by Elasticsearch: a conflict or a
mapping error) becomes a dead-letter write (:func:`indexer.deadletter.rejected_item`);
:class:`DeadLetters` writes it and, when Elasticsearch refuses the dead-letter document
itself, writes its barest form (:func:`indexer.deadletter.bare_item`). When even that is
refused, the log line holds the record: nothing is swallowed silently.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import orjson

from indexer.bulk import BulkItem, ItemResult, ItemStatus
from indexer.deadletter import bare_item, rejected_item
from otel_audit.validate import Violation

__all__ = ["DeadLetters", "Write", "refusal"]

_log = logging.getLogger(__name__)

Write = Callable[[list[BulkItem]], Awaitable[list[ItemResult]]]


def refusal(item: BulkItem, result: ItemResult, received_ns: int) -> tuple[Violation, BulkItem]:
    """Why Elasticsearch refused an event (CONFLICT or MAPPING), and its dead-letter write.

    The decoded record is kept when the item still has it (live ingest); a replayed item
    has only its built document, which is kept instead.
    """
    if result.status is ItemStatus.CONFLICT:
        kind, reason = "conflict", Violation("audit.event.id", "conflict", result.detail)
    elif result.status is ItemStatus.MAPPING:
        kind, reason = "mapping", Violation("document", "mapping", result.detail)
    else:
        raise ValueError(f"not a refusal: {result.status}")
    if item.record is not None:
        dead = rejected_item(
            kind,
            [reason],
            received_ns=received_ns,
            record=item.record,
            content_hash=item.content_hash,
            stored_content_hash=result.stored_hash,
            event_id=item.doc_id,
            document=item.document if kind == "mapping" else None,
        )
    else:
        dead = rejected_item(
            kind,
            [reason],
            received_ns=received_ns,
            original=item.document,
            content_hash=item.content_hash,
            stored_content_hash=result.stored_hash,
            event_id=item.doc_id,
        )
    return reason, dead


class DeadLetters:
    """Writes dead letters through ``write`` (the batcher live, Elasticsearch on replay)."""

    def __init__(self, write: Write) -> None:
        self._write = write

    async def write(self, items: list[BulkItem]) -> bool:
        """Write ``items``; False when Elasticsearch (and the spool) could not take them."""
        if not items:
            return True
        return await self.settle(items, await self._write(items))

    async def settle(self, items: Sequence[BulkItem], results: Sequence[ItemResult]) -> bool:
        """After ``items`` were written with ``results``: retry refused ones in their
        barest form. False when any of them is not durable (UNAVAILABLE)."""
        if any(r.status is ItemStatus.UNAVAILABLE for r in results):
            return False
        retry = [
            bare_item(item, result.detail)
            for item, result in zip(items, results, strict=True)
            if result.status is ItemStatus.MAPPING
        ]
        if not retry:
            return True
        again = await self._write(retry)
        if any(r.status is ItemStatus.UNAVAILABLE for r in again):
            return False
        for item, result in zip(retry, again, strict=True):
            if result.status is ItemStatus.MAPPING:
                # Last resort: the log line holds the record; never swallowed silently.
                _log.error(
                    "dead-letter document refused by Elasticsearch (%s): %s",
                    result.detail,
                    orjson.dumps(item.document).decode("utf-8", "replace"),
                )
        return True
