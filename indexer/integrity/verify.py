"""``otel-audit verify``: prove the stored audit trail unaltered, or say exactly what changed.

This module reads Elasticsearch and the external checkpoint store; every decision is
made by the pure :func:`indexer.integrity.classify.classify`. Trusted are only the
signatures (the keyring) and the verifier's own clock and options:

1. Every record in ``audit-blocks`` (of one chain, or all): its checkpoint signature
   (``unknown_key`` / ``bad_signature``), its link to the previous *trusted* record, and
   that its frontier and leaf hashes recompute to the signed roots. A record that fails
   any of these covers nothing and is never the previous checkpoint of another.
2. The external checkpoint store against ``audit-blocks``: ``truncated``, ``missing`` or
   replaced blocks. Freshness: a chain whose newest trusted checkpoint is older than the
   heartbeat interval plus grace (verifier's clock) is *stale* (exit code 4).
3. Every event in range, read with a point in time and hashed in worker processes
   (:mod:`indexer.integrity.leaf_scan`): ``modified``, ``reordered``, ``missing``,
   ``misplaced`` (not in the index its block names), and indices holding sealed events
   that the read alias does not reach (``unreachable``). An event no trusted block covers
   is pending until the sealing deadline, counted from when this verifier opened its
   point in time; verify waits for that deadline (bounded by ``max_wait_s``), re-reads
   the block records written meanwhile, and reports what is still uncovered as
   ``inserted``.

With ``since`` (a checkpoint verified before), only the records after it are checked:
the first must chain to it and its frontier recompute to its root (a consistency proof
by recomputation), and only events stored after it are read.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exc

from indexer.indices import BLOCKS_INDEX, EVENTS_ALIAS, EVENTS_PATTERN
from indexer.integrity.blocks import PER_EVENT_FIELDS, BlockRecord, block_doc_id, iter_block_docs
from indexer.integrity.classify import (
    Finding,
    FindingKind,
    Inputs,
    VerifyReport,
    classify,
    recheck_pending,
)
from indexer.integrity.leaf_scan import LeafScan
from otel_audit.integrity import (
    Checkpoint,
    CheckpointFormatError,
    IntegrityError,
    Keyring,
    leaf_hash_of_document,
)
from otel_audit.integrity.store import CheckpointStore

__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_SEAL_INTERVAL_S",
    "Finding",
    "FindingKind",
    "VerifyOptions",
    "VerifyReport",
    "verify",
]

DEFAULT_SEAL_INTERVAL_S = 1.0
"""The receiver's default ``integrity.block_max_interval_ms`` (1000), in seconds."""
DEFAULT_HEARTBEAT_S = 60.0
"""The receiver's default ``integrity.heartbeat_interval_s``."""
DEFAULT_GRACE_S = 30.0
"""Slack added to both: a loaded sealer, clock skew between receiver and verifier."""


@dataclass(slots=True)
class VerifyOptions:
    """What to verify and how."""

    chain_id: str | None = None
    """Only this chain's blocks (events no block covers are still reported)."""
    time_from: str | None = None
    """Events with ``@timestamp >=`` this (date math or RFC 3339)."""
    time_to: str | None = None
    """Events with ``@timestamp <=`` this."""
    grace_s: float = DEFAULT_GRACE_S
    """Added to the seal interval (sealing deadline) and the heartbeat (staleness)."""
    seal_interval_s: float = DEFAULT_SEAL_INTERVAL_S
    """The receivers' ``integrity.block_max_interval_ms``, in seconds."""
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    """The receivers' ``integrity.heartbeat_interval_s``."""
    seal_deadline_s: float | None = None
    """Override: an event stored this long before the scan must be sealed by a trusted
    block (default ``seal_interval_s + grace_s``)."""
    stale_after_s: float | None = None
    """Override: the newest trusted checkpoint may be this old (default ``heartbeat_s +
    grace_s``); 0 turns the freshness check off."""
    max_wait_s: float | None = None
    """Wait at most this long for the sealing deadline of uncovered events (default: the
    whole deadline); what is still before its deadline then stays pending."""
    since: Checkpoint | None = None
    """A checkpoint verified before: check only what its chain added after it."""
    page_size: int = 5000
    """Events per search page."""
    slices: int = 2
    """Parallel slices the events are read in."""
    processes: bool = True
    """Read and hash each slice in its own worker process (else threads of this one)."""
    progress: Callable[[int, float], None] | None = None
    """Called about once a second with (events so far, seconds elapsed)."""
    event_pages: Callable[[], Iterable[tuple[list[str], list[str], list[bytes | str]]]] | None = (
        None
    )
    """The events to check, already read and hashed (``(ids, indices, leaf hashes)`` pages),
    instead of reading them: what :mod:`indexer.integrity.changes` found written since the
    last verified run. Sealed events of the blocks checked that are not among them are
    read by id."""
    policy_deletions: Any = None
    """Signed lifecycle records (:class:`indexer.lifecycle.verify_archive.PolicyDeletions`):
    a sealed event they say the policy removed is counted as archived, not missing."""
    clock: Callable[[], float] = time.time
    """The verifier's clock (seconds since the epoch)."""
    sleep: Callable[[float], None] = time.sleep
    """How the verifier waits for the sealing deadline."""

    def deadline_ms(self) -> int:
        """The sealing deadline in milliseconds."""
        s = self.seal_deadline_s
        return int(1000 * (self.seal_interval_s + self.grace_s if s is None else s))

    def stale_ms(self) -> int:
        """How old the newest trusted checkpoint may be, in milliseconds (0: unchecked)."""
        s = self.stale_after_s
        return int(1000 * (self.heartbeat_s + self.grace_s if s is None else s))


def _block_query(chain_id: str | None, after: Mapping[str, int] | None = None) -> dict[str, Any]:
    must: list[dict[str, Any]] = []
    if chain_id:
        must.append({"term": {"chain_id": chain_id}})
    if after:
        must.append(
            {
                "bool": {
                    "should": [
                        {
                            "bool": {
                                "filter": [
                                    {"term": {"chain_id": c}},
                                    {"range": {"sequence": {"gt": seq}}},
                                ]
                            }
                        }
                        for c, seq in after.items()
                    ]
                    + [{"bool": {"must_not": {"terms": {"chain_id": sorted(after)}}}}],
                    "minimum_should_match": 1,
                }
            }
        )
    return {"bool": {"filter": must}} if must else {"match_all": {}}


def _block_docs(
    es: Elasticsearch,
    query: dict[str, Any],
    wanted: Callable[[Mapping[str, Any]], bool] | None,
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Block documents, each chain's in sequence order; with ``wanted``, only those it
    accepts are read whole (see :func:`indexer.integrity.blocks.iter_block_docs`)."""
    return iter_block_docs(es, query, whole=wanted)


def _lookup(es: Elasticsearch) -> Callable[[Sequence[tuple[str, str]]], list[bytes | str | None]]:
    def lookup(keys: Sequence[tuple[str, str]]) -> list[bytes | str | None]:
        out: list[bytes | str | None] = []
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            resp = es.mget(docs=[{"_index": idx, "_id": eid} for idx, eid in chunk])
            for doc in resp["docs"]:
                if not doc.get("found"):
                    out.append(None)
                    continue
                try:
                    out.append(leaf_hash_of_document(doc["_source"]))
                except IntegrityError as exc:
                    out.append(str(exc))
        return out

    return lookup


def _alias_indices(es: Elasticsearch) -> list[str]:
    try:
        return list(es.indices.get_alias(name=EVENTS_ALIAS, index=EVENTS_PATTERN).body)
    except es_exc.NotFoundError:
        return []


def _in_range(options: VerifyOptions) -> Callable[[BlockRecord], bool] | None:
    lo, hi = options.time_from, options.time_to
    since = options.since
    if lo is None and hi is None and since is None:
        return None

    def in_range(rec: BlockRecord) -> bool:
        if since is not None and (rec.chain_id != since.origin or rec.sequence <= since.sequence):
            return False
        if lo is None and hi is None:
            return True
        tr = rec.time_range
        if tr is None:
            return False
        return not ((hi is not None and tr[0] > hi) or (lo is not None and tr[1] < lo))

    return in_range


def _doc_in_range(in_range: Callable[[BlockRecord], bool]) -> Callable[[Mapping[str, Any]], bool]:
    def wanted(src: Mapping[str, Any]) -> bool:
        try:
            rec = BlockRecord.from_document({**src, **{k: [] for k in PER_EVENT_FIELDS}})
        except IntegrityError:
            return True  # read whole, so the malformed record is reported as it is
        return in_range(rec)

    return wanted


def _event_query(options: VerifyOptions) -> dict[str, Any]:
    rng: dict[str, str] = {}
    if options.time_from is not None:
        rng["gte"] = options.time_from
    if options.time_to is not None:
        rng["lte"] = options.time_to
    filters: list[dict[str, Any]] = []
    if rng:
        filters.append({"range": {"@timestamp": rng}})
    if options.since is not None:
        # Selection only (which events to read), never a classification: the receiver
        # stamps event.ingested before sealing, so events stored after the checkpoint
        # carry a later time. A full verify reads everything.
        filters.append(
            {
                "range": {
                    "event.ingested": {
                        "gt": options.since.timestamp_ms,
                        "format": "epoch_millis",
                    }
                }
            }
        )
    return {"bool": {"filter": filters}} if filters else {"match_all": {}}


def _realtime_block(es: Elasticsearch) -> Callable[[str, int], Checkpoint | None]:
    """A block record's signed checkpoint read by id (real time, unlike a search)."""

    def get(chain_id: str, sequence: int) -> Checkpoint | None:
        try:
            doc = es.get(index=BLOCKS_INDEX, id=block_doc_id(chain_id, sequence))
            return BlockRecord.from_document(doc["_source"]).checkpoint
        except (es_exc.NotFoundError, CheckpointFormatError):
            return None

    return get


def _external(
    store: CheckpointStore, chain_id: str, since: Checkpoint | None
) -> Iterator[Checkpoint | CheckpointFormatError]:
    for item in store.read(chain_id):
        if (
            since is None
            or isinstance(item, CheckpointFormatError)
            or item.sequence > since.sequence
        ):
            yield item


def verify(
    es: Elasticsearch,
    keyring: Keyring,
    store: CheckpointStore | None,
    options: VerifyOptions | None = None,
) -> VerifyReport:
    """Verify blocks, checkpoints and events; see the module docstring."""
    options = options or VerifyOptions()
    began = time.monotonic()
    clock = options.clock
    report = VerifyReport()
    if store is None:
        report.warnings.append(
            "no external checkpoint store: deleting the newest blocks cannot be detected"
        )
    chain_id = options.chain_id
    if options.since is not None:
        chain_id = options.since.origin
    external: dict[str, Iterable[Checkpoint | CheckpointFormatError]] | None = None
    if store is not None:
        chains = [c for c in store.chains() if chain_id is None or c == chain_id]
        # Read lazily, in step with the chain's block records.
        external = {c: _external(store, c, options.since) for c in chains}
    in_range = _in_range(options)
    lookup = _lookup(es)
    scanned = 0
    last_progress = began

    # The events are read (and hashed) from here on, while the blocks are checked.
    scan_ms = int(clock() * 1000)
    given = options.event_pages
    with (
        contextlib.nullcontext(None)
        if given is not None
        else LeafScan(
            es,
            EVENTS_PATTERN,
            _event_query(options),
            options.page_size,
            options.slices,
            processes=options.processes,
        )
    ) as scan:

        def pages() -> Iterator[tuple[list[str], list[str], list[bytes | str]]]:
            nonlocal scanned, last_progress
            if given is not None:
                source = given()
            else:
                assert scan is not None
                source = scan.pages()
            for page in source:
                yield page
                scanned += len(page[0])
                now = time.monotonic()
                if options.progress is not None and now - last_progress >= 1.0:
                    options.progress(scanned, now - began)
                    last_progress = now

        classify(
            Inputs(
                block_docs=_block_docs(
                    es,
                    _block_query(chain_id),
                    None if in_range is None else _doc_in_range(in_range),
                ),
                keyring=keyring,
                external=external,
                pages=pages(),
                lookup=lookup,
                alias=EVENTS_ALIAS,
                alias_indices=lambda: _alias_indices(es),
                now_ms=int(clock() * 1000),
                scan_ms=scan_ms,
                seal_deadline_ms=options.deadline_ms(),
                stale_after_ms=options.stale_ms(),
                chain_id=chain_id,
                in_range=in_range,
                policy=options.policy_deletions,
                anchor=options.since,
                realtime_block=_realtime_block(es),
            ),
            report,
        )
    if report.pending:
        deadline_ms = scan_ms + options.deadline_ms()
        wait_s = max(0.0, deadline_ms / 1000 - clock())
        if options.max_wait_s is not None:
            wait_s = min(wait_s, max(0.0, options.max_wait_s))
        if wait_s > 0:
            options.sleep(wait_s)
        # The verify role may not refresh (read only): then the recheck sees what the
        # index's own refresh (1 s) has made searchable, which the wait above covers.
        with contextlib.suppress(es_exc.NotFoundError, es_exc.AuthorizationException):
            es.indices.refresh(index=BLOCKS_INDEX)
        seen = {c: int(info["last_sequence"]) for c, info in report.chains.items()}
        recheck_pending(
            report,
            _block_docs(es, _block_query(chain_id, seen or None), None),
            keyring,
            lookup,
            seen=seen,
            overdue=int(clock() * 1000) >= deadline_ms,
        )
        if report.pending:
            report.warnings.append(
                f"{len(report.pending)} events are not covered by a trusted block and their "
                "sealing deadline has not passed yet: run verify again after it"
            )
    report.elapsed_s = time.monotonic() - began
    if options.progress is not None:
        options.progress(report.events_checked, report.elapsed_s)
    return report
