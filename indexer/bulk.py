"""Write documents to Elasticsearch with ``_bulk``: create-only, per-item outcomes, own retries.

Every write is ``op_type=create`` with a deterministic ``_id``, so writing the same item
twice is harmless: the second write answers 409 and the stored content hash tells a retry
(same content: already stored) from a conflict (another record claiming the same id).

Per item::

    201                         CREATED
    409, stored hash == ours    DUPLICATE   (already stored: a retry or a spool replay;
                                the result carries the stored document)
    409, stored hash != ours    CONFLICT    (never overwritten; the caller dead-letters it)
    409, item without a hash    DUPLICATE   (dead-letter documents: same _id, same content)
    429 / 5xx                   retried with exponential backoff and jitter, bounded;
                                UNAVAILABLE when the bound is reached
    other 4xx (mapping ...)     MAPPING     (the caller dead-letters it, never drops it)

A whole request that fails (connection refused or reset, timeout, 5xx on ``_bulk``
itself) leaves every unresolved item UNAVAILABLE: the caller spools them. The writer never
raises for Elasticsearch trouble; it only reports.

Bodies are serialized once with orjson (cached on the item for retries) and sent as
pre-encoded NDJSON bytes, which the client forwards untouched.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter, methodcaller
from typing import Any, NamedTuple

import orjson
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, NdjsonSerializer, TransportError
from elasticsearch import AsyncElasticsearch
from elasticsearch import exceptions as es_exc

from otel_audit.record import LogRecordData

__all__ = [
    "CREATED",
    "BulkItem",
    "BulkSettings",
    "BulkWriter",
    "ItemResult",
    "ItemStatus",
    "PreEncodedNdjson",
]

_log = logging.getLogger(__name__)
_NEWLINE = orjson.OPT_APPEND_NEWLINE
_SORTED_LINE = orjson.OPT_APPEND_NEWLINE | orjson.OPT_SORT_KEYS
# Items' serialized lines, read off a batch in C.
_ENCODED = methodcaller("encoded")
_ENCODED_ATTR = attrgetter("_encoded")

# Only what the outcome needs: big responses parse faster without _index/_version/_shards.
_FILTER_PATH = (
    "errors,items.*.status,items.*.error.type,items.*.error.reason,"
    "items.*.error.caused_by.type,items.*.error.caused_by.reason"
)


class PreEncodedNdjson(NdjsonSerializer):
    """The client's NDJSON serializer, minus two copies of a body that is already bytes.

    The stock one copies a ``bytes`` body into a bytearray and back to check its final
    newline: megabytes per ``_bulk``. Bodies this module builds always end with one.
    """

    def dumps(self, data: Any) -> bytes:
        """``data`` as is when it is NDJSON bytes already; else the stock serialization."""
        if type(data) is bytes and data.endswith(b"\n"):
            return data
        return super().dumps(data)


class ItemStatus(enum.Enum):
    """The final outcome of one item of a write."""

    CREATED = "created"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    MAPPING = "mapping"
    UNAVAILABLE = "unavailable"
    SPOOLED = "spooled"
    """Not written by the writer: the caller fsynced it into its spool instead."""

    @property
    def stored(self) -> bool:
        """The document is stored in Elasticsearch (now or by an earlier write)."""
        return self is ItemStatus.CREATED or self is ItemStatus.DUPLICATE


class ItemResult(NamedTuple):
    """Outcome of one item; ``detail`` says why for CONFLICT, MAPPING and UNAVAILABLE."""

    status: ItemStatus
    detail: str = ""
    stored_hash: str | None = None
    """For CONFLICT: the content hash of the document already stored under the id."""
    stored: dict[str, Any] | None = None
    """For DUPLICATE of a hashed item: the document Elasticsearch holds under the id. A
    retry rebuilds its document (its own ``event.ingested``), so what is sealed for a
    duplicate must come from this stored copy, never from the retry's bytes."""


CREATED = ItemResult(ItemStatus.CREATED)
"""The result of every item a write created: one shared (immutable) object."""


class BulkItem:
    """One document to create.

    ``content_hash`` is compared with the stored one on 409; items without it (dead-letter
    documents, whose id is derived from their content) treat every 409 as already stored.
    ``record`` is the decoded record the document came from, kept in memory only so a
    conflict or mapping error can be dead-lettered with the original.

    A write needs only the serialized bytes: :meth:`compact` serializes the document and
    lets go of the dict, so a batch waiting for Elasticsearch holds a few bytes objects
    per event instead of a tree of containers that Python's garbage collector scans again
    and again. :attr:`document` still answers afterwards, parsed back from the bytes (the
    rare paths that need it: spooling, dead-letters).
    """

    __slots__ = (
        "_document",
        "_encoded",
        "_source_at",
        "content_hash",
        "doc_id",
        "index",
        "leaf_hash",
        "record",
        "sort_keys",
        "timestamp",
    )

    def __init__(
        self,
        index: str,
        doc_id: str,
        document: dict[str, Any],
        content_hash: str | None = None,
        record: LogRecordData | None = None,
        sort_keys: bool = False,
    ) -> None:
        self.index = index
        self.doc_id = doc_id
        self._document: dict[str, Any] | None = document
        self.content_hash = content_hash
        self.record = record
        self.sort_keys = sort_keys
        """Serialize the document with sorted keys: its bytes then serve the leaf hash too."""
        self.leaf_hash: bytes | None = None
        """The event's Merkle leaf hash, when a sealing write path computed it (not sent)."""
        self.timestamp = ""
        """The document's ``@timestamp``, when a write path keeps it past :meth:`compact`."""
        self._encoded: bytes | None = None
        self._source_at = 0

    @classmethod
    def from_encoded(
        cls,
        index: str,
        doc_id: str,
        encoded: bytes,
        source_at: int,
        content_hash: str | None = None,
        leaf_hash: bytes | None = None,
        timestamp: str = "",
        *,
        record: LogRecordData | None = None,
    ) -> BulkItem:
        """An item already serialized, compact from the start: ``encoded`` is its two
        NDJSON lines (action, then the sorted-key document from ``source_at`` on); a
        sealing write path also gives the leaf hash and ``@timestamp`` it computed. The
        positional parameters are a ``receiver.ingest.prepare.Prepared`` tuple's fields."""
        item = cls.__new__(cls)
        item.index = index
        item.doc_id = doc_id
        item._document = None
        item.content_hash = content_hash
        item.record = record
        item.sort_keys = True
        item.leaf_hash = leaf_hash
        item.timestamp = timestamp
        item._encoded = encoded
        item._source_at = source_at
        return item

    def __repr__(self) -> str:
        return f"BulkItem(index={self.index!r}, doc_id={self.doc_id!r})"

    @property
    def document(self) -> dict[str, Any]:
        """The document; after :meth:`compact`, a fresh dict parsed from the bytes sent."""
        if self._document is not None:
            return self._document
        parsed: dict[str, Any] = orjson.loads(self.source_json())
        return parsed

    @staticmethod
    def encoded_all(items: Sequence[BulkItem]) -> list[bytes]:
        """``[item.encoded() for item in items]``, read straight off items that are
        serialized already (all of them, on the write path) rather than by a call each."""
        lines: list[bytes | None] = list(map(_ENCODED_ATTR, items))
        if None in lines:
            return list(map(_ENCODED, items))
        return lines  # type: ignore[return-value]  # no None, checked above

    def encoded(self) -> bytes:
        """The two NDJSON lines (action + source) of this item, serialized once."""
        if self._encoded is None:
            action = orjson.dumps(
                {"create": {"_index": self.index, "_id": self.doc_id}}, option=_NEWLINE
            )
            option = _SORTED_LINE if self.sort_keys else _NEWLINE
            self._source_at = len(action)
            self._encoded = action + orjson.dumps(self._document, option=option)
        return self._encoded

    def move_to(self, index: str) -> None:
        """Create the document in ``index`` instead (its action line is rewritten; the
        document's bytes stay as they are)."""
        if index == self.index:
            return
        source = self.source_json() if self._encoded is not None else None
        self.index = index
        if source is not None:
            action = orjson.dumps(
                {"create": {"_index": index, "_id": self.doc_id}}, option=_NEWLINE
            )
            self._encoded = action + source + b"\n"
            self._source_at = len(action)

    def compact(self) -> None:
        """Serialize now and drop the document dict (see the class docstring)."""
        self.encoded()
        self._document = None

    def source_json(self) -> bytes:
        """The document's JSON exactly as sent."""
        return self.encoded()[self._source_at : -1]

    def sorted_source(self) -> bytes | None:
        """:meth:`source_json` when the document is sent with sorted keys (else None)."""
        return self.source_json() if self.sort_keys else None


@dataclass(frozen=True, slots=True)
class BulkSettings:
    """Limits of one write; time values in seconds."""

    max_docs: int = 2000
    """Items per ``_bulk`` request; larger writes are split."""
    max_bytes: int = 8 * 1024 * 1024
    """Body bytes per ``_bulk`` request (one item may exceed it alone)."""
    timeout_s: float = 10.0
    """One ``_bulk`` request slower than this counts as Elasticsearch being unavailable."""
    max_attempts: int = 5
    """Attempts per item for 429 / 5xx answers before it is reported UNAVAILABLE."""
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0
    wait_for_active_shards: str = "1"
    """Shard copies that must be active before a ``_bulk`` proceeds (``1`` .. ``all``)."""

    def __post_init__(self) -> None:
        for name in ("max_docs", "max_bytes", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"bulk {name} must be >= 1, got {getattr(self, name)}")
        for name in ("timeout_s", "backoff_initial_s", "backoff_max_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"bulk {name} must be > 0, got {getattr(self, name)}")


class _WholeRequestFailed(Exception):
    """The ``_bulk`` request as a whole did not get per-item answers."""


def _is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


class BulkWriter:
    """Creates documents through ``_bulk`` and reports one :class:`ItemResult` per item."""

    def __init__(
        self,
        es: AsyncElasticsearch,
        settings: BulkSettings | None = None,
        *,
        observe: Callable[[float, int], None] | None = None,
    ) -> None:
        """``observe(duration_s, docs)`` is called after every ``_bulk`` round trip."""
        self._es = es
        self.settings = settings or BulkSettings()
        self._observe = observe

    async def write(self, items: Sequence[BulkItem]) -> list[ItemResult]:
        """Create ``items``; the results are in the same order. Never raises for ES errors."""
        results: list[ItemResult | None] = [None] * len(items)
        for chunk in self._chunks(range(len(items)), items):
            await self._write_chunk(items, chunk, results)
        return [
            r if r is not None else ItemResult(ItemStatus.UNAVAILABLE, "no answer") for r in results
        ]

    def _chunks(self, positions: range, items: Sequence[BulkItem]) -> list[list[int]]:
        s = self.settings
        sizes = list(map(len, BulkItem.encoded_all(items)))
        if len(sizes) <= s.max_docs and sum(sizes) <= s.max_bytes:
            return [list(positions)]  # the usual case: one request
        chunks: list[list[int]] = []
        current: list[int] = []
        size = 0
        for pos in positions:
            n = sizes[pos]
            if current and (len(current) >= s.max_docs or size + n > s.max_bytes):
                chunks.append(current)
                current, size = [], 0
            current.append(pos)
            size += n
        if current:
            chunks.append(current)
        return chunks

    async def _write_chunk(
        self, items: Sequence[BulkItem], chunk: list[int], results: list[ItemResult | None]
    ) -> None:
        s = self.settings
        pending = chunk
        conflicts: list[int] = []
        deadline = time.monotonic() + s.timeout_s * s.max_attempts
        for attempt in range(1, s.max_attempts + 1):
            try:
                answers = await self._send(items, pending)
            except _WholeRequestFailed as exc:
                for pos in pending:
                    results[pos] = ItemResult(ItemStatus.UNAVAILABLE, str(exc))
                break
            if answers is None:  # no item failed
                for pos in pending:
                    results[pos] = CREATED
                break
            retry: list[int] = []
            last_reason = ""
            for pos, answer in zip(pending, answers, strict=True):
                status = int(answer.get("status", 0))
                if status in (200, 201):
                    results[pos] = CREATED
                elif status == 409:
                    conflicts.append(pos)
                elif _is_retryable_status(status):
                    retry.append(pos)
                    last_reason = _reason(answer, status)
                else:
                    results[pos] = ItemResult(ItemStatus.MAPPING, _reason(answer, status))
            if not retry:
                break
            if attempt == s.max_attempts or time.monotonic() >= deadline:
                for pos in retry:
                    results[pos] = ItemResult(
                        ItemStatus.UNAVAILABLE,
                        f"still failing after {attempt} attempts: {last_reason}",
                    )
                break
            await asyncio.sleep(self._backoff_s(attempt))
            pending = retry
        if conflicts:
            await self._resolve_conflicts(items, conflicts, results)

    def _backoff_s(self, attempt: int) -> float:
        s = self.settings
        ceiling = min(s.backoff_max_s, s.backoff_initial_s * (2 ** (attempt - 1)))
        # Full jitter: concurrent writers that failed together do not retry together.
        return random.uniform(ceiling / 2, ceiling)

    async def _send(
        self, items: Sequence[BulkItem], positions: list[int]
    ) -> list[dict[str, Any]] | None:
        """Each item's answer, in order; None when Elasticsearch says no item failed."""
        if len(positions) == len(items):
            body = b"".join(BulkItem.encoded_all(items))
        else:
            body = b"".join([items[pos].encoded() for pos in positions])
        began = time.monotonic()
        try:
            response = await asyncio.wait_for(
                self._es.bulk(
                    operations=body,  # type: ignore[arg-type]  # pre-encoded NDJSON passes through
                    filter_path=_FILTER_PATH,
                    wait_for_active_shards=self.settings.wait_for_active_shards,
                ),
                timeout=self.settings.timeout_s,
            )
        except (TimeoutError, ConnectionTimeout) as exc:
            raise _WholeRequestFailed(
                f"_bulk took longer than {self.settings.timeout_s:g} s"
            ) from exc
        except (TransportConnectionError, OSError) as exc:
            raise _WholeRequestFailed(f"Elasticsearch unreachable: {exc}") from exc
        except es_exc.ApiError as exc:
            raise _WholeRequestFailed(f"_bulk failed with HTTP {exc.meta.status}: {exc}") from exc
        except TransportError as exc:
            raise _WholeRequestFailed(f"_bulk failed: {exc}") from exc
        finally:
            if self._observe is not None:
                self._observe(time.monotonic() - began, len(positions))
        answer = response.body if hasattr(response, "body") else None
        if not isinstance(answer, dict):
            raise _WholeRequestFailed("_bulk answer is not a JSON object")
        body_items = answer.get("items")
        if not isinstance(body_items, list) or len(body_items) != len(positions):
            raise _WholeRequestFailed("_bulk answer does not have one item per document")
        if answer.get("errors") is False:
            return None
        return [next(iter(entry.values())) for entry in body_items]

    async def _resolve_conflicts(
        self, items: Sequence[BulkItem], positions: list[int], results: list[ItemResult | None]
    ) -> None:
        hashed = [pos for pos in positions if items[pos].content_hash is not None]
        for pos in positions:
            if items[pos].content_hash is None:
                results[pos] = ItemResult(ItemStatus.DUPLICATE)
        if not hashed:
            return
        # The whole stored document: a duplicate is sealed with the leaf of what
        # Elasticsearch holds. 409s are rare (retries, replays), so the reads are few.
        docs = [{"_index": items[pos].index, "_id": items[pos].doc_id} for pos in hashed]
        try:
            response = await asyncio.wait_for(
                self._es.mget(docs=docs), timeout=self.settings.timeout_s
            )
        except (TimeoutError, TransportError, OSError) as exc:
            for pos in hashed:
                results[pos] = ItemResult(
                    ItemStatus.UNAVAILABLE, f"could not read the stored document: {exc}"
                )
            return
        found = response.body.get("docs", [])
        for pos, doc in zip(hashed, found, strict=False):
            ours = items[pos].content_hash
            source = doc.get("_source")
            if not isinstance(source, dict):
                source = {}
            audit = source.get("audit")
            stored = audit.get("content_hash") if isinstance(audit, dict) else None
            if not doc.get("found"):
                # 409 but gone: cannot happen for append-only indices; report, do not guess.
                results[pos] = ItemResult(
                    ItemStatus.UNAVAILABLE, "409 on create but the stored document is not found"
                )
            elif stored == ours:
                results[pos] = ItemResult(ItemStatus.DUPLICATE, stored=source)
            else:
                results[pos] = ItemResult(
                    ItemStatus.CONFLICT,
                    f"event id {items[pos].doc_id} is already stored with different content "
                    f"(stored content_hash {stored}, this record {ours})",
                    stored_hash=stored if isinstance(stored, str) else None,
                )


def _reason(answer: dict[str, Any], status: int) -> str:
    error = answer.get("error")
    if isinstance(error, dict):
        kind = error.get("type", "error")
        reason = str(error.get("reason", ""))[:500]
        cause = error.get("caused_by")
        if isinstance(cause, dict):
            reason += (
                f" (caused by {cause.get('type', 'error')}: {str(cause.get('reason', ''))[:300]})"
            )
        return f"HTTP {status} {kind}: {reason}"
    return f"HTTP {status}"
