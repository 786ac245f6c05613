"""What changed in the store since the last verified run, read from Elasticsearch's own
per-shard sequence numbers.

Every write to a shard (create, index over, update, delete) consumes the next ``_seq_no``
of that shard; no client can write without one, and none can choose it. A verifier that
recorded, after a verified run, each shard's highest ``_seq_no`` and how many documents
it held (the :class:`Watermark`) can later tell, with one small search per shard that
counts from the index structures (points, doc values) without reading documents:

- every document written since (``_seq_no`` above the mark): new events, a forged insert
  (whatever its ``@timestamp`` or ``event.ingested``), and the new version of an edited
  event. These are read and hashed for the verifier's pure core to classify;
- whether any document at or below the mark was deleted or rewritten: the count of
  documents with ``_seq_no`` at or below the mark no longer equals the recorded count
  (a delete consumes a ``_seq_no`` but leaves no document; an edit moves the document
  above the mark). New writes never land at or below it.

:func:`read_changes` returns the documents above the mark and the reasons a deep (full)
verify is needed instead: a shard whose count below the mark changed, an index whose
UUID or shard count changed (deleted and recreated), an index that vanished, or one that
left the read alias. ``audit-blocks`` is watched the same way: its records are
append-only too, so a changed old record calls for a full verify. An index that appears
is read whole (every document is above a mark of -1): a new daily index is normal, a
back-dated one holds only events no trusted block covers.

Reading needs only ``read`` and ``view_index_metadata`` on the events indices and
``audit-blocks`` (the verify role's privileges). :func:`escalations` and the
:class:`Watermark` JSON form are pure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exc

from indexer.indices import BLOCKS_INDEX, EVENTS_ALIAS, EVENTS_PATTERN
from otel_audit.integrity import IntegrityError, leaf_hash_of_document

__all__ = [
    "Changes",
    "IndexMark",
    "ShardMark",
    "Watermark",
    "escalations",
    "read_changes",
]

Page = tuple[list[str], list[str], list["bytes | str"]]
"""``(event ids, indices, leaf hashes or why one cannot be hashed)``, as the verifier's
event scan yields them."""

_PREFERENCE = "changes"
"""Custom search preference: each shard is read from the same copy run after run, so a
replica that refreshes later than its primary does not look like a change."""

_SORT: list[dict[str, Any]] = [{"_seq_no": {"order": "asc", "unmapped_type": "long"}}]
"""By sequence number; an index without a mapping yet (no document) answers empty."""


@dataclass(frozen=True, slots=True)
class ShardMark:
    """One shard after a verified run."""

    max_seq_no: int
    """Highest ``_seq_no`` of a document the run saw (-1: none)."""
    docs: int
    """Documents with ``_seq_no`` at or below ``max_seq_no``."""


@dataclass(frozen=True, slots=True)
class IndexMark:
    """One index after a verified run."""

    uuid: str
    shards: tuple[ShardMark, ...]


@dataclass(frozen=True, slots=True)
class Watermark:
    """Every watched index (events and ``audit-blocks``) after a verified run."""

    indices: Mapping[str, IndexMark] = field(default_factory=dict)
    alias: frozenset[str] = frozenset()
    """The events indices the read alias reached."""

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready form, to keep with the verifier's own state."""
        return {
            "indices": {
                name: {
                    "uuid": mark.uuid,
                    "shards": [[s.max_seq_no, s.docs] for s in mark.shards],
                }
                for name, mark in sorted(self.indices.items())
            },
            "alias": sorted(self.alias),
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> Watermark:
        """Inverse of :meth:`to_json_dict`; ValueError names what is malformed."""
        try:
            indices = {
                str(name): IndexMark(
                    str(mark["uuid"]),
                    tuple(ShardMark(int(s[0]), int(s[1])) for s in mark["shards"]),
                )
                for name, mark in data["indices"].items()
            }
            return cls(indices, frozenset(str(a) for a in data["alias"]))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ValueError(f"malformed watermark: {exc!r}") from exc


@dataclass(slots=True)
class Changes:
    """What :func:`read_changes` found."""

    watermark: Watermark
    """The store as this read saw it: the mark to record once a run verified it."""
    escalate: list[str] = field(default_factory=list)
    """Why a full verify is needed (empty: the documents above the mark are all that
    changed)."""
    pages: list[Page] = field(default_factory=list)
    """The event documents above the mark, hashed."""
    fetched: int = 0
    """Event documents read (above the mark)."""
    requests: int = 0
    """Requests sent to Elasticsearch."""


def escalations(
    before: Watermark,
    layout: Mapping[str, tuple[str, int]],
    alias: frozenset[str],
    below: Mapping[tuple[str, int], int],
) -> list[str]:
    """Why the documents above ``before`` cannot be all that changed; pure.

    ``layout`` maps each index now to its UUID and shard count, ``alias`` the events
    indices the read alias reaches now, ``below[(index, shard)]`` the documents with
    ``_seq_no`` at or below that shard's mark now.
    """
    reasons: list[str] = []
    for name, mark in sorted(before.indices.items()):
        now = layout.get(name)
        if now is None:
            reasons.append(f"index {name} vanished")
            continue
        uuid, shards = now
        if uuid != mark.uuid or shards != len(mark.shards):
            reasons.append(
                f"index {name} was replaced (uuid {mark.uuid} -> {uuid}, "
                f"{len(mark.shards)} -> {shards} shards)"
            )
            continue
        for shard, sm in enumerate(mark.shards):
            got = below.get((name, shard))
            if got is not None and got != sm.docs:
                reasons.append(
                    f"index {name} shard {shard}: {got} documents at or below _seq_no "
                    f"{sm.max_seq_no}, {sm.docs} recorded (deleted or rewritten)"
                )
    for name in sorted(before.alias - alias):
        reasons.append(f"index {name} left the read alias {EVENTS_ALIAS}")
    return reasons


def _layout(es: Elasticsearch) -> dict[str, tuple[str, int]]:
    settings = es.indices.get_settings(
        index=f"{EVENTS_PATTERN},{BLOCKS_INDEX}",
        name="index.uuid,index.number_of_shards",
        flat_settings=True,
        allow_no_indices=True,
        ignore_unavailable=True,
    ).body
    return {
        name: (str(s["settings"]["index.uuid"]), int(s["settings"]["index.number_of_shards"]))
        for name, s in settings.items()
    }


def _alias(es: Elasticsearch) -> frozenset[str]:
    try:
        return frozenset(es.indices.get_alias(name=EVENTS_ALIAS, index=EVENTS_PATTERN).body)
    except es_exc.NotFoundError:
        return frozenset()


def _hash(source: Mapping[str, Any]) -> bytes | str:
    try:
        return leaf_hash_of_document(source)
    except IntegrityError as exc:
        return str(exc)


def _page(hits: Sequence[Mapping[str, Any]]) -> Page:
    return (
        [h["_id"] for h in hits],
        [h["_index"] for h in hits],
        [_hash(h["_source"]) for h in hits],
    )


def _marks_body(mark: int) -> dict[str, Any]:
    """The shard's documents, those at or below ``mark`` and its highest ``_seq_no``: one
    reader, counted from the points and doc values, not by reading documents."""
    return {
        "size": 0,
        "query": {"match_all": {}},
        "track_total_hits": True,
        "aggs": {
            "below": {"filter": {"range": {"_seq_no": {"lte": mark}}}},
            "max": {"max": {"field": "_seq_no"}},
        },
    }


def _docs_body(after: int, upto: int, size: int) -> dict[str, Any]:
    """A page of the shard's documents in ``(after, upto]``, by ``_seq_no``."""
    return {
        "size": size,
        "query": {"range": {"_seq_no": {"gt": after, "lte": upto}}},
        "sort": _SORT,
        "track_total_hits": False,
    }


def _rest(
    es: Elasticsearch, index: str, shard: int, after: int, upto: int, size: int
) -> Iterator[list[dict[str, Any]]]:
    """Further pages of one shard's documents in ``(after, upto]``."""
    while True:
        hits = es.search(
            index=index,
            preference=f"_shards:{shard}|{_PREFERENCE}",
            **_docs_body(after, upto, size),
        )["hits"]["hits"]
        if not hits:
            return
        yield hits
        after = int(hits[-1]["sort"][0])
        if len(hits) < size:
            return


def _msearch(
    es: Elasticsearch, bodies: Sequence[tuple[str, int, dict[str, Any]]], batch: int
) -> Iterator[tuple[str, int, Mapping[str, Any]]]:
    """``(index, shard, body)`` searched in batches; ``(index, shard, response)``."""
    for i in range(0, len(bodies), batch):
        chunk = bodies[i : i + batch]
        searches: list[dict[str, Any]] = []
        for name, shard, body in chunk:
            searches.append({"index": name, "preference": f"_shards:{shard}|{_PREFERENCE}"})
            searches.append(body)
        responses = es.msearch(searches=searches)["responses"]
        for (name, shard, _body), resp in zip(chunk, responses, strict=True):
            if "error" in resp:
                raise RuntimeError(f"reading the changes of {name} shard {shard}: {resp['error']}")
            yield name, shard, resp


def read_changes(
    es: Elasticsearch,
    before: Watermark | None,
    *,
    page_size: int = 2000,
    msearch_batch: int = 200,
) -> Changes:
    """The store now against ``before``; see the module docstring.

    Without ``before`` only the marks are taken (no documents read), for a run that reads
    everything anyway. Documents are read only while no reason for a full verify is
    known: a replaced index is not read whole just to be read again.

    First, per shard, the count at or below the old mark and the highest ``_seq_no`` (one
    multi-search); then the documents between the two, from the same shard copy, so a
    later reader: every document the first round counted is there unless deleted since.
    """
    layout = _layout(es)
    alias = _alias(es)
    requests = 2
    marks = before.indices if before is not None else {}
    shards: list[tuple[str, int, dict[str, Any]]] = []
    starts: dict[tuple[str, int], int] = {}
    for name, (uuid, count) in sorted(layout.items()):
        mark = marks.get(name)
        same = mark is not None and mark.uuid == uuid and len(mark.shards) == count
        for shard in range(count):
            start = mark.shards[shard].max_seq_no if same and mark is not None else -1
            starts[(name, shard)] = start
            shards.append((name, shard, _marks_body(start)))
    below: dict[tuple[str, int], int] = {}
    tops: dict[tuple[str, int], int] = {}
    totals: dict[tuple[str, int], int] = {}
    for name, shard, resp in _msearch(es, shards, msearch_batch):
        aggs = resp["aggregations"]
        top = aggs["max"]["value"]
        below[(name, shard)] = int(aggs["below"]["doc_count"])
        tops[(name, shard)] = int(top) if top is not None else -1
        totals[(name, shard)] = int(resp["hits"]["total"]["value"])
    requests += (len(shards) + msearch_batch - 1) // msearch_batch
    reasons = escalations(before, layout, alias, below) if before is not None else []
    changes = Changes(Watermark())
    fetched: dict[tuple[str, int], int] = {}
    if before is not None and not reasons:
        wanted = [
            (name, shard, _docs_body(starts[(name, shard)], tops[(name, shard)], page_size))
            for (name, shard), top in sorted(tops.items())
            if name != BLOCKS_INDEX and top > starts[(name, shard)]
        ]
        for name, shard, resp in _msearch(es, wanted, msearch_batch):
            hits = resp["hits"]["hits"]
            if not hits:
                continue
            pages = [hits]
            if len(hits) == page_size:
                pages.extend(
                    _rest(es, name, shard, int(hits[-1]["sort"][0]), tops[(name, shard)], page_size)
                )
            for page in pages:
                changes.pages.append(_page(page))
                fetched[(name, shard)] = fetched.get((name, shard), 0) + len(page)
            requests += len(pages) - 1
        requests += (len(wanted) + msearch_batch - 1) // msearch_batch
        changes.fetched = sum(fetched.values())
    new_marks: dict[str, list[ShardMark]] = {name: [] for name in layout}
    for (name, shard), top in sorted(tops.items()):
        start = starts[(name, shard)]
        if before is not None and not reasons and name != BLOCKS_INDEX:
            # What this read saw at or below the new mark: a document made visible after
            # the first round (written before it) is counted too.
            docs = below[(name, shard)] + fetched.get((name, shard), 0)
        else:
            docs = totals[(name, shard)]
        new_marks[name].append(ShardMark(max(top, start), docs))
    changes.watermark = Watermark(
        {name: IndexMark(layout[name][0], tuple(ms)) for name, ms in new_marks.items()},
        alias,
    )
    changes.requests = requests
    changes.escalate = reasons
    return changes
