"""Handing the events Elasticsearch confirmed to the sealer, as columns.

The sealer sees every event confirmed in Elasticsearch by a write, including ones that
were already stored (409 with the same content): a replay after a crash must not leave an
event unsealed, so the sealer deduplicates by event id.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Sequence
from operator import attrgetter
from typing import Protocol

from indexer.bulk import CREATED, BulkItem, ItemResult, ItemStatus
from otel_audit.integrity import leaf_hash_of_event
from receiver.errors import Unavailable
from receiver.sealing.state import Entries

__all__ = ["SealHandoff", "Sealer"]

_log = logging.getLogger(__name__)

# The sealer takes a write's events as columns, read off the items in C.
_INDEX = attrgetter("index")
_DOC_ID = attrgetter("doc_id")
_LEAF_HASH = attrgetter("leaf_hash")
_TIMESTAMP = attrgetter("timestamp")
_CONTENT_HASH = attrgetter("content_hash")


class Sealer(Protocol):
    """What the integrity chain plugs in behind the write (sync or async ``on_durable``)."""

    def on_durable(self, stored: Entries, created: Sequence[bool]) -> Awaitable[None] | None:
        """Called once per write with the events Elasticsearch confirmed: their index,
        id, leaf hash and ``@timestamp``, and whether this write created each one (False
        when it found it already stored, a 409 with the same content)."""
        ...


class SealHandoff:
    """Called after every write that reached Elasticsearch (live or replayed)."""

    def __init__(self, sealer: Sealer, retry_after_s: float) -> None:
        self.sealer = sealer
        self._retry_after_s = retry_after_s

    async def __call__(self, items: Sequence[BulkItem], results: Sequence[ItemResult]) -> None:
        """Hand the stored events of a write to the sealer; Unavailable when it fails."""
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
            outcome = self.sealer.on_durable(stored, created)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception as exc:
            # Stored but not anchored: answer retryably. The client's retry meets a 409
            # with the same content, which reaches the sealer again and is journaled then.
            _log.exception("sealer failed for %d stored events", len(stored))
            raise Unavailable(
                f"events stored but not sealed ({exc}); retry", self._retry_after_s
            ) from exc
