"""Handing the events Elasticsearch confirmed to the sealer, as columns.

The sealer sees every event confirmed in Elasticsearch by a write, including ones that
were already stored (409 with the same content): a replay after a crash must not leave an
event unsealed, so the sealer deduplicates by event id. Such a duplicate is handed over
with the leaf hash of the document Elasticsearch holds (read back by the writer), never
of the retry's rebuilt document, whose ``event.ingested`` differs: what is sealed is
what is stored.

Before a write is sent, :meth:`SealHandoff.intend` has the sealer log (fsynced) the index,
id and leaf hash of every event it is about to store: after a crash between
Elasticsearch's answer and the journal, the next start reads those events back and seals
the stored ones, with no client retry needed.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from operator import attrgetter
from typing import Any, Protocol

from indexer.bulk import CREATED, BulkItem, ItemResult, ItemStatus
from otel_audit.integrity import leaf_hash_of_event
from receiver.errors import Unavailable
from receiver.sealing.state import Entries

__all__ = ["CRASH_AFTER_STORE_ENV", "SealHandoff", "Sealer"]

CRASH_AFTER_STORE_ENV = "OTEL_AUDIT_FAULT_CRASH_AFTER_STORE"
"""Fault injection for crash tests: when set to ``1`` the process SIGKILLs itself after
Elasticsearch confirmed a write and before the sealer journals it (the window where a
stored event is in no journal and no block, and a client retry must repair it)."""

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


def _settled(ok: bool) -> None:
    """Nothing to settle: the sealer logs no intents."""


class SealHandoff:
    """Called after every write that reached Elasticsearch (live or replayed); its
    :meth:`intend` before every such write."""

    def __init__(self, sealer: Sealer, retry_after_s: float) -> None:
        self.sealer = sealer
        self._retry_after_s = retry_after_s
        self._crash_after_store = os.environ.get(CRASH_AFTER_STORE_ENV) == "1"

    async def intend(self, items: Sequence[BulkItem]) -> Callable[[bool], None]:
        """Log the write's sealable events as intended before it is sent; returns the
        function to call once the write is settled (True: its hand-off succeeded).

        Unavailable when the intent cannot be logged: nothing was sent, the client retries.
        """
        on_intent = getattr(self.sealer, "on_intent", None)
        if on_intent is None:
            return _settled
        chosen = [it for it in items if it.content_hash is not None]
        leaves = [
            it.leaf_hash if it.leaf_hash is not None else leaf_hash_of_event(it.document)
            for it in chosen
        ]
        entries = Entries(
            list(map(_INDEX, chosen)),
            list(map(_DOC_ID, chosen)),
            leaves,
            [t if isinstance(t, str) else "" for t in map(_TIMESTAMP, chosen)],
        )
        try:
            settle: Callable[[bool], None] = await on_intent(entries)
        except Exception as exc:
            _log.exception("could not log the intent for %d events", len(entries))
            raise Unavailable(
                f"events not stored: the sealer cannot log them ({exc}); retry",
                self._retry_after_s,
            ) from exc
        return settle

    async def __call__(self, items: Sequence[BulkItem], results: Sequence[ItemResult]) -> None:
        """Hand the stored events of a write to the sealer; Unavailable when it fails."""
        chosen: Sequence[BulkItem] = items
        created: list[bool] = [True] * len(items)
        stored_copies: list[dict[str, Any] | None] = []
        # Usually every item of the write was created: see that at C speed.
        if results.count(CREATED) != len(results) or None in map(_CONTENT_HASH, items):
            picked = [
                (it, r)
                for it, r in zip(items, results, strict=True)
                if it.content_hash is not None and r.status.stored
            ]
            chosen = [it for it, _ in picked]
            created = [r.status is ItemStatus.CREATED for _, r in picked]
            stored_copies = [r.stored for _, r in picked]
        if not chosen:
            return
        leaves = list(map(_LEAF_HASH, chosen))
        stamps = list(map(_TIMESTAMP, chosen))
        for i, it in enumerate(chosen):
            copy = stored_copies[i] if stored_copies else None
            if copy is None and created[i] and it.leaf_hash is not None:
                continue
            # A duplicate is sealed with the leaf of the document Elasticsearch holds
            # (a retry's rebuilt document differs in event.ingested); an item hashed by
            # no write path is hashed from its document as stored.
            doc = copy if copy is not None else it.document
            if copy is None and not created[i]:
                _log.warning(
                    "duplicate %s came without the stored document; hashing the write's copy",
                    it.doc_id,
                )
            leaves[i] = leaf_hash_of_event(doc)
            ts = doc.get("@timestamp")
            stamps[i] = ts if isinstance(ts, str) else ""
        stored = Entries(
            list(map(_INDEX, chosen)),
            list(map(_DOC_ID, chosen)),
            leaves,
            stamps,
        )
        if self._crash_after_store:
            _log.critical("fault injection: killing the process between store and journal")
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            outcome = self.sealer.on_durable(stored, created)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception as exc:
            # Stored but not anchored: answer retryably. The sweeper seals them from the
            # write's intent; a client's retry meets a 409 and is sealed once either way.
            _log.exception("sealer failed for %d stored events", len(stored))
            raise Unavailable(
                f"events stored but not sealed ({exc}); retry", self._retry_after_s
            ) from exc
