"""The ``audit-blocks`` index: one record per signed checkpoint of a chain.

A *block* record seals a run of stored events; a *heartbeat* record signs the same tree
size again with a new time, proving nothing was written meanwhile. Both carry the signed
checkpoint (``otel_audit.integrity.checkpoint``), whose ``previous_hash`` chains it to
the chain's previous record and whose root covers every event of the chain so far.

Besides the signed checkpoint a record holds what a verifier needs to check events
without any other state, none of it trusted on its own:

- ``leaf_hashes`` and ``event_ids``/``event_indices`` in leaf order: where each sealed
  event lives and what it hashed to. ``frontier`` (the compact range of the chain before
  this block) plus ``leaf_hashes`` must recompute to the signed root, and the frontier
  must recompute to the previous checkpoint's root; a record edited in Elasticsearch
  fails one of the two.
- ``time_range`` (event ``@timestamp`` min/max) to pick blocks for a time-range verify.
- ``id_keys``: the few terms a block is found by from an event id (:func:`id_key`); the
  per-event fields above are kept in ``_source`` only, never indexed.

Document ``_id`` is ``<chain id>:<sequence, 20 digits>`` written with ``op_type=create``,
so a block is never overwritten and a retry after a crash answers 409.

:func:`iter_block_docs` is the one reader of the index that pages (point in time and
``search_after``, one page held at a time): verify, ``prove`` and the witness's
consistency proofs use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from elasticsearch import NotFoundError

from indexer.indices import BLOCKS_INDEX
from indexer.mappings import TemplateSettings, replica_settings
from otel_audit.integrity import (
    Checkpoint,
    CheckpointFormatError,
    CompactRange,
    ProofError,
    decode_hash,
    encode_hash,
    encode_hashes,
)
from otel_audit.schema import Schema

__all__ = [
    "ID_KEYS_MAPPING",
    "KIND_BLOCK",
    "KIND_HEARTBEAT",
    "BlockRecord",
    "block_doc_id",
    "blocks_template",
    "find_holding",
    "holding_query",
    "id_key",
    "id_keys",
    "iter_block_docs",
    "merge_time_range",
]

KIND_BLOCK = "block"
KIND_HEARTBEAT = "heartbeat"

_KEPT_ONLY = {"type": "object", "enabled": False}
"""Kept in ``_source`` and never parsed into fields: thousands of values per record."""

PER_EVENT_FIELDS = ("event_ids", "event_indices", "leaf_hashes", "frontier", "id_keys")
"""The fields of a record that grow with its block (and the frontier with the chain)."""

ID_KEYS_MAPPING = {"type": "keyword", "doc_values": False}
"""Term lookups only: no doc values."""

_ID_KEY_CHARS = 11
"""A UUIDv7's first 11 characters: its 40 high bits, the time in steps of 256 ms."""


def id_key(event_id: str) -> str:
    """The lookup key of an event id in ``id_keys``: for a UUIDv7 (what the SDKs mint)
    its time to 256 ms, shared by the ids minted together; any other id is its own key.

    Finding the blocks that hold an id is then a term query on a few keys per block
    rather than on every id: indexing 5,000 ids per record cost Elasticsearch more CPU
    than the block's events' share of sealing allows. A key is only a way to find
    candidates: the record's ``event_ids`` decide, and ``id_keys`` are checked against
    them when a record is read whole.
    """
    if len(event_id) == 36 and event_id[14] == "7" and event_id[8] == "-":
        return event_id[:_ID_KEY_CHARS]
    return event_id


def id_keys(event_ids: Sequence[str]) -> list[str]:
    """The sorted distinct :func:`id_key` of ``event_ids`` (one pass in C for the
    usual block, whose ids are all UUIDv7)."""
    if all(len(e) == 36 and e[14] == "7" and e[8] == "-" for e in event_ids):
        return sorted({e[:_ID_KEY_CHARS] for e in event_ids})
    return sorted({id_key(e) for e in event_ids})


def holding_query(event_ids: Sequence[str]) -> dict[str, Any]:
    """A query for the block records that may hold any of ``event_ids`` (candidates: the
    caller keeps those whose ``event_ids`` do). Records written before ``id_keys``
    existed are found by their indexed ``event_ids``."""
    return {
        "bool": {
            "filter": [{"term": {"kind": KIND_BLOCK}}],
            "should": [
                {"terms": {"id_keys": id_keys(event_ids)}},
                {"terms": {"event_ids": list(event_ids)}},
            ],
            "minimum_should_match": 1,
        }
    }


CHAIN_ORDER: list[dict[str, Any]] = [{"chain_id": "asc"}, {"sequence": "asc"}]
"""Sort of :func:`iter_block_docs` by default: each chain's records in sequence order.
The sort fields are unsigned copies of the checkpoint's; a reader must not trust the order."""


def block_doc_id(chain_id: str, sequence: int) -> str:
    """The ``_id`` of a chain's record ``sequence``; sorts in sequence order."""
    return f"{chain_id}:{sequence:020d}"


def blocks_template(schema: Schema, settings: TemplateSettings) -> dict[str, Any]:
    """Composable index template for ``audit-blocks``."""
    return {
        "index_patterns": [BLOCKS_INDEX],
        "priority": 200,
        "_meta": {"description": "otel-audit signed Merkle blocks and heartbeats"},
        "template": {
            "settings": {
                "index": {
                    "number_of_shards": 1,
                    **replica_settings(settings),
                    "translog": {"durability": "request"},
                }
            },
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "chain_id": {"type": "keyword"},
                    "sequence": {"type": "long"},
                    "kind": {"type": "keyword"},
                    "first_leaf": {"type": "long"},
                    "tree_size": {"type": "long"},
                    "leaf_count": {"type": "long"},
                    "root_hash": {"type": "keyword"},
                    "block_hash": {"type": "keyword"},
                    "prev_block_hash": {"type": "keyword"},
                    "key_id": {"type": "keyword"},
                    "sealed_at": {"type": "date", "format": "epoch_millis"},
                    "time_range": {
                        "properties": {
                            "gte": {"type": "date_nanos"},
                            "lte": {"type": "date_nanos"},
                        }
                    },
                    # `prove`, the API and the sealer's duplicate check find a block by an
                    # event id through its few keys (id_key); term lookups only.
                    "id_keys": ID_KEYS_MAPPING,
                    "event_ids": _KEPT_ONLY,
                    "event_indices": _KEPT_ONLY,
                    "leaf_hashes": _KEPT_ONLY,
                    "frontier": _KEPT_ONLY,
                    "checkpoint": {"type": "object", "enabled": False},
                },
            },
        },
    }


@dataclass(frozen=True, slots=True)
class BlockRecord:
    """One ``audit-blocks`` document, parsed. Hashes are raw bytes."""

    kind: str
    checkpoint: Checkpoint
    first_leaf: int
    event_ids: tuple[str, ...]
    event_indices: tuple[str, ...]
    leaf_hashes: tuple[bytes, ...]
    frontier: tuple[bytes, ...]
    time_range: tuple[str, str] | None = None

    @property
    def chain_id(self) -> str:
        """The chain (receiver instance) this record belongs to."""
        return self.checkpoint.origin

    @property
    def sequence(self) -> int:
        """Position of this record in its chain."""
        return self.checkpoint.sequence

    @property
    def doc_id(self) -> str:
        """Elasticsearch ``_id`` of the record."""
        return block_doc_id(self.chain_id, self.sequence)

    def frontier_range(self) -> CompactRange:
        """The chain's compact range before this block; raises ProofError if malformed."""
        return CompactRange.from_state(self.first_leaf, self.frontier)

    def to_document(self) -> dict[str, Any]:
        """The Elasticsearch document."""
        cp = self.checkpoint
        doc: dict[str, Any] = {
            "chain_id": cp.origin,
            "sequence": cp.sequence,
            "kind": self.kind,
            "first_leaf": self.first_leaf,
            "tree_size": cp.tree_size,
            "leaf_count": len(self.leaf_hashes),
            "root_hash": encode_hash(cp.root_hash),
            "block_hash": encode_hash(cp.digest()),
            "prev_block_hash": encode_hash(cp.previous_hash),
            "key_id": cp.key_id,
            "sealed_at": cp.timestamp_ms,
            "event_ids": list(self.event_ids),
            "id_keys": id_keys(self.event_ids),
            "event_indices": list(self.event_indices),
            "leaf_hashes": encode_hashes(self.leaf_hashes),
            "frontier": [encode_hash(h) for h in self.frontier],
            "checkpoint": cp.to_json_dict(),
        }
        if self.time_range is not None:
            doc["time_range"] = {"gte": self.time_range[0], "lte": self.time_range[1]}
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> BlockRecord:
        """Parse a stored record; raises :class:`CheckpointFormatError` naming the problem.

        Only the signed checkpoint is authoritative; the other fields are checked against
        it by the verifier.
        """
        try:
            cp = Checkpoint.from_json_dict(doc.get("checkpoint"))
            ids = _str_list(doc.get("event_ids", []), "event_ids")
            indices = _str_list(doc.get("event_indices", []), "event_indices")
            hashes = tuple(
                decode_hash(h, f"leaf_hashes[{i}]")
                for i, h in enumerate(doc.get("leaf_hashes", []))
            )
            frontier = tuple(
                decode_hash(h, f"frontier[{i}]") for i, h in enumerate(doc.get("frontier", []))
            )
            first_leaf = doc.get("first_leaf")
            if type(first_leaf) is not int or first_leaf < 0:
                raise CheckpointFormatError("first_leaf must be a non-negative integer")
            if not len(ids) == len(indices) == len(hashes):
                raise CheckpointFormatError(
                    f"{len(ids)} event ids, {len(indices)} indices and {len(hashes)} leaf hashes"
                )
            if ids and "id_keys" in doc and doc["id_keys"] != id_keys(ids):
                raise CheckpointFormatError("id_keys do not match event_ids")
            kind = doc.get("kind")
            if kind not in (KIND_BLOCK, KIND_HEARTBEAT):
                raise CheckpointFormatError(f"kind {kind!r} is not block or heartbeat")
            tr = doc.get("time_range")
            time_range = (str(tr["gte"]), str(tr["lte"])) if isinstance(tr, Mapping) else None
        except (TypeError, KeyError, AttributeError) as exc:
            raise CheckpointFormatError(f"block record is malformed: {exc}") from exc
        return cls(
            kind=str(kind),
            checkpoint=cp,
            first_leaf=first_leaf,
            event_ids=ids,
            event_indices=indices,
            leaf_hashes=hashes,
            frontier=frontier,
            time_range=time_range,
        )

    def seal_problems(self, previous: Checkpoint | None) -> list[str]:
        """Why the unsigned fields disagree with the signed checkpoint(s); empty if they agree.

        ``previous`` is the chain's previous checkpoint when known: the frontier must then
        recompute to its root.
        """
        problems: list[str] = []
        cp = self.checkpoint
        if self.first_leaf + len(self.leaf_hashes) != cp.tree_size:
            problems.append(
                f"first_leaf {self.first_leaf} + {len(self.leaf_hashes)} leaves "
                f"!= signed tree size {cp.tree_size}"
            )
            return problems
        try:
            cr = self.frontier_range()
        except ProofError as exc:
            return [f"frontier is malformed: {exc}"]
        if previous is not None and (
            previous.tree_size != self.first_leaf or cr.root() != previous.root_hash
        ):
            problems.append("frontier does not match the previous checkpoint's root")
        cr.extend(self.leaf_hashes)
        if cr.root() != cp.root_hash:
            problems.append("leaf hashes do not recompute to the signed root")
        return problems


async def find_holding(
    es: Any,
    event_ids: Sequence[str],
    *,
    index: str = BLOCKS_INDEX,
    source_includes: Sequence[str] | None = None,
    page_size: int = 20,
) -> AsyncIterator[dict[str, Any]]:
    """The hits of the block records that hold any of ``event_ids``, by chain and
    sequence, paged with ``search_after`` (``source_includes`` narrows ``_source``; the
    record's ``event_ids`` are always read, they decide). Elasticsearch errors propagate."""
    wanted = set(event_ids)
    after: list[Any] | None = None
    while True:
        body: dict[str, Any] = {
            "index": index,
            "query": holding_query(event_ids),
            "sort": [*CHAIN_ORDER],
            "size": page_size,
            "track_total_hits": False,
        }
        if source_includes is not None:
            body["source_includes"] = [*source_includes, "event_ids"]
        if after is not None:
            body["search_after"] = after
        resp = await es.search(**body)
        hits = resp["hits"]["hits"]
        for hit in hits:
            ids = hit["_source"].get("event_ids")
            if isinstance(ids, list) and not wanted.isdisjoint(ids):
                yield hit
        if len(hits) < page_size:
            return
        after = hits[-1]["sort"]


def iter_block_docs(
    es: Any,
    query: Mapping[str, Any],
    *,
    sort: Sequence[Mapping[str, Any]] = CHAIN_ORDER,
    page_size: int = 100,
    whole: Callable[[Mapping[str, Any]], bool] | None = None,
    light_page_size: int = 1000,
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every ``audit-blocks`` document matching ``query`` as ``(_id, _source)``, in ``sort``
    order, read page by page with a point in time and ``search_after`` (nothing when the
    index does not exist). At most one page is held at a time.

    With ``whole``, records are listed without their :data:`PER_EVENT_FIELDS` (pages of
    ``light_page_size``) and only those ``whole(source)`` accepts are then read whole,
    ``page_size`` records or about :data:`WHOLE_BATCH_EVENTS` events a request; the others
    are yielded with those fields empty. A verify of a time range thus holds the
    per-event fields of the blocks of its range only.
    """
    try:
        pit = es.open_point_in_time(index=BLOCKS_INDEX, keep_alive="2m", ignore_unavailable=True)[
            "id"
        ]
    except NotFoundError:
        return
    size = page_size if whole is None else light_page_size
    try:
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "size": size,
                "query": dict(query),
                "pit": {"id": pit, "keep_alive": "2m"},
                "sort": [*sort, {"_shard_doc": "asc"}],
                "track_total_hits": False,
            }
            if whole is not None:
                body["_source"] = {"excludes": list(PER_EVENT_FIELDS)}
            if after is not None:
                body["search_after"] = after
            resp = es.search(**body)
            pit = resp.get("pit_id", pit)
            hits = resp["hits"]["hits"]
            if not hits:
                return
            if whole is None:
                for hit in hits:
                    yield hit["_id"], hit["_source"]
            else:
                yield from _whole_where(es, hits, whole, page_size)
            if len(hits) < size:
                return
            after = hits[-1]["sort"]
    finally:
        # The PIT expires on its own if this fails.
        with contextlib.suppress(Exception):
            es.close_point_in_time(id=pit)


_EMPTY: dict[str, list[str]] = {k: [] for k in PER_EVENT_FIELDS}
WHOLE_BATCH_EVENTS = 20_000
"""At most about this many events' fields are read whole in one request (one block more)."""


def _whole_where(
    es: Any,
    hits: list[dict[str, Any]],
    whole: Callable[[Mapping[str, Any]], bool],
    batch: int,
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The hits in order, the ones ``whole`` accepts read whole: one ``mget`` per
    ``batch`` records or :data:`WHOLE_BATCH_EVENTS` events (their ``leaf_count``)."""
    start = 0
    while start < len(hits):
        ids: list[str] = []
        events = 0
        end = start
        while end < len(hits) and len(ids) < batch and events < WHOLE_BATCH_EVENTS:
            source = hits[end]["_source"]
            if whole(source):
                ids.append(hits[end]["_id"])
                count = source.get("leaf_count")
                events += count if isinstance(count, int) and count > 0 else 1
            end += 1
        full: dict[str, Mapping[str, Any]] = {}
        if ids:
            for doc in es.mget(index=BLOCKS_INDEX, ids=ids)["docs"]:
                if doc.get("found"):
                    full[doc["_id"]] = doc["_source"]
        for h in hits[start:end]:
            src = full.pop(h["_id"], None)
            yield h["_id"], src if src is not None else {**h["_source"], **_EMPTY}
        start = end


def _str_list(value: object, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CheckpointFormatError(f"{name} must be a list of strings")
    return tuple(value)


def merge_time_range(timestamps: Sequence[str]) -> tuple[str, str] | None:
    """Min and max of RFC 3339 UTC timestamps of one format (they sort as text)."""
    if not timestamps:
        return None
    return min(timestamps), max(timestamps)
