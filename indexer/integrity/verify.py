"""``otel-audit verify``: prove the stored audit trail unaltered, or say exactly what changed.

What is checked, in order:

1. Every record in ``audit-blocks`` (of one chain, or all): its checkpoint signature
   against the keyring (``unknown_key`` / ``bad_signature``), its link to the previous
   record (``previous_hash``, sequence), and that its frontier and leaf hashes recompute
   to the signed roots: the previous checkpoint's and its own. That last check is the
   consistency proof between consecutive checkpoints, done by recomputation. A record
   that fails it was edited in Elasticsearch (``bad_signature``, "tampered block").
2. The external checkpoint store against ``audit-blocks``: a checkpoint the store has
   and Elasticsearch does not is ``truncated`` (newest blocks or the whole index gone)
   or a ``missing`` block (a gap); one that differs means a block was replaced.
3. Every event: the events in range are read with a point in time and ``search_after``
   in slices, each read and hashed by a worker process (:mod:`indexer.integrity.leaf_scan`) from the
   start, while the blocks are checked; this process compares. An event whose
   leaf hash differs from its position's is ``reordered`` when it equals another position's
   hash in the same block, else ``modified``; a sealed event not found is ``missing``; an
   event no block covers is ``inserted``, unless it was ingested after the newest
   checkpoint minus ``grace_s`` (the unsealed tail: counted as pending).

Findings are grouped by root cause: when a chain is truncated, the events it no longer
covers are reported as inserted with that cause, so a report stays readable.
"""

from __future__ import annotations

import calendar
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exc

from indexer.indices import BLOCKS_INDEX, EVENTS_PATTERN
from indexer.integrity.blocks import BlockRecord
from indexer.integrity.leaf_scan import LeafScan, pit_pages
from otel_audit.integrity import (
    Checkpoint,
    CheckpointFormatError,
    CheckpointStatus,
    IntegrityError,
    Keyring,
    chain_link_problems,
    leaf_hash_of_document,
    verify_checkpoint,
)
from otel_audit.integrity.store import CheckpointStore

__all__ = [
    "Finding",
    "FindingKind",
    "VerifyOptions",
    "VerifyReport",
    "verify",
]


class FindingKind(StrEnum):
    """How a finding is classified."""

    MODIFIED = "modified"
    MISSING = "missing"
    INSERTED = "inserted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing that is not as sealed."""

    kind: FindingKind
    message: str
    chain_id: str | None = None
    sequence: int | None = None
    event_id: str | None = None
    index: str | None = None
    cause: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready dict without empty fields."""
        out = {
            "kind": str(self.kind),
            "message": self.message,
            "chain_id": self.chain_id,
            "sequence": self.sequence,
            "event_id": self.event_id,
            "index": self.index,
            "cause": self.cause,
        }
        return {k: v for k, v in out.items() if v is not None}


@dataclass(slots=True)
class VerifyOptions:
    """What to verify and how."""

    chain_id: str | None = None
    """Only this chain's blocks (events no block covers are still reported)."""
    time_from: str | None = None
    """Events with ``@timestamp >=`` this (date math or RFC 3339)."""
    time_to: str | None = None
    """Events with ``@timestamp <=`` this."""
    grace_s: float = 5.0
    """Events ingested this close to the newest checkpoint count as not yet sealed."""
    page_size: int = 5000
    """Events per search page."""
    slices: int = 2
    """Parallel slices the events are read in."""
    processes: bool = True
    """Read and hash each slice in its own worker process (else threads of this one)."""
    progress: Callable[[int, float], None] | None = None
    """Called about once a second with (events so far, seconds elapsed)."""
    policy_deletions: Any = None
    """Signed lifecycle records (:class:`indexer.lifecycle.verify_archive.PolicyDeletions`):
    a sealed event they say the policy removed is counted as archived, not missing."""


@dataclass(slots=True)
class VerifyReport:
    """Result of :func:`verify`; ``ok`` only when there are no findings."""

    findings: list[Finding] = field(default_factory=list)
    chains: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocks_checked: int = 0
    events_checked: int = 0
    events_pending: int = 0
    events_archived: int = 0
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.findings

    def counts(self) -> dict[str, int]:
        """Number of findings per kind."""
        out: dict[str, int] = {}
        for f in self.findings:
            out[str(f.kind)] = out.get(str(f.kind), 0) + 1
        return out

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready dict for ``--json``."""
        rate = self.events_checked / self.elapsed_s if self.elapsed_s else 0.0
        return {
            "ok": self.ok,
            "summary": {
                "findings": self.counts(),
                "blocks_checked": self.blocks_checked,
                "events_checked": self.events_checked,
                "events_pending": self.events_pending,
                "events_archived": self.events_archived,
                "elapsed_s": round(self.elapsed_s, 3),
                "events_per_s": round(rate, 1),
            },
            "chains": self.chains,
            "warnings": self.warnings,
            "findings": [f.to_json_dict() for f in self.findings],
        }


def _ns_text_to_ms(value: object) -> int | None:
    """``2025-01-02T03:04:05.123456789Z`` -> epoch milliseconds (None if unparsable)."""
    if not isinstance(value, str) or len(value) < 20:
        return None
    try:
        secs = calendar.timegm(time.strptime(value[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    frac = value[20:23] if value[19] == "." else ""
    return secs * 1000 + (int(frac.ljust(3, "0")) if frac.isdigit() else 0)


def _all_hits(
    es: Elasticsearch, index: str, query: dict[str, Any], size: int
) -> Iterator[list[dict[str, Any]]]:
    """Every hit of ``query`` in pages, read with a point in time (none if no index)."""
    try:
        pit = es.open_point_in_time(index=index, keep_alive="2m", ignore_unavailable=True)["id"]
    except es_exc.NotFoundError:
        return
    try:
        yield from pit_pages(es, pit, query, size)
    finally:
        # The PIT expires on its own if this fails.
        with contextlib.suppress(Exception):
            es.close_point_in_time(id=pit)


def _signature_finding(status: CheckpointStatus) -> FindingKind:
    """The finding for a checkpoint whose signature check did not pass."""
    if status is CheckpointStatus.UNKNOWN_KEY:
        return FindingKind.UNKNOWN_KEY
    return FindingKind.BAD_SIGNATURE


@dataclass(slots=True)
class _Sealed:
    """Where a sealed event should be, and what it hashed to."""

    chain_id: str
    sequence: int
    position: int
    leaf_hash: bytes
    index: str
    block: BlockRecord


def _load_blocks(
    es: Elasticsearch, chain_id: str | None
) -> tuple[list[BlockRecord], list[Finding]]:
    query: dict[str, Any] = {"match_all": {}}
    if chain_id:
        query = {"term": {"chain_id": chain_id}}
    records: list[BlockRecord] = []
    findings: list[Finding] = []
    for page in _all_hits(es, BLOCKS_INDEX, query, 200):
        for hit in page:
            try:
                records.append(BlockRecord.from_document(hit["_source"]))
            except IntegrityError as exc:
                findings.append(
                    Finding(
                        FindingKind.BAD_SIGNATURE,
                        f"block record {hit['_id']} is malformed (tampered block): {exc}",
                        chain_id=str(hit["_source"].get("chain_id")),
                    )
                )
    records.sort(key=lambda r: (r.chain_id, r.sequence))
    return records, findings


def _check_chain(records: list[BlockRecord], keyring: Keyring, report: VerifyReport) -> set[int]:
    """Signature, link and seal checks of one chain; returns sequences not to trust."""
    untrusted: set[int] = set()
    chain_id = records[0].chain_id
    prev: BlockRecord | None = None
    if records[0].sequence != 0:
        report.findings.append(
            Finding(
                FindingKind.MISSING,
                f"blocks 0..{records[0].sequence - 1} of chain {chain_id} are missing",
                chain_id=chain_id,
                sequence=0,
            )
        )
    for rec in records:
        cp = rec.checkpoint
        status = verify_checkpoint(cp, keyring)
        if status is not CheckpointStatus.OK:
            kind = _signature_finding(status)
            report.findings.append(
                Finding(
                    kind,
                    f"block {rec.sequence} of chain {chain_id} is signed by key {cp.key_id}, "
                    + (
                        "which is not in the keyring"
                        if kind is FindingKind.UNKNOWN_KEY
                        else "and the signature does not verify"
                    ),
                    chain_id=chain_id,
                    sequence=rec.sequence,
                )
            )
            untrusted.add(rec.sequence)
        consecutive = prev is not None and prev.sequence + 1 == rec.sequence
        if prev is not None and not consecutive:
            report.findings.append(
                Finding(
                    FindingKind.MISSING,
                    f"blocks {prev.sequence + 1}..{rec.sequence - 1} of chain {chain_id} "
                    "are missing from audit-blocks",
                    chain_id=chain_id,
                    sequence=prev.sequence + 1,
                )
            )
        previous_cp = prev.checkpoint if consecutive and prev is not None else None
        if (
            consecutive
            and prev is not None
            and prev.sequence not in untrusted
            and (rec.sequence not in untrusted)
        ):
            link = chain_link_problems(prev.checkpoint, cp)
            if link:
                report.findings.append(
                    Finding(
                        FindingKind.BAD_SIGNATURE,
                        f"block {rec.sequence} of chain {chain_id} does not chain to block "
                        f"{prev.sequence} (one of them was replaced): {'; '.join(link)}",
                        chain_id=chain_id,
                        sequence=rec.sequence,
                    )
                )
        elif prev is None and rec.sequence == 0:
            link = chain_link_problems(None, cp)
            if link:
                report.findings.append(
                    Finding(
                        FindingKind.BAD_SIGNATURE,
                        f"first block of chain {chain_id}: {'; '.join(link)}",
                        chain_id=chain_id,
                        sequence=0,
                    )
                )
        if rec.sequence not in untrusted:
            problems = rec.seal_problems(previous_cp)
            if problems:
                report.findings.append(
                    Finding(
                        FindingKind.BAD_SIGNATURE,
                        f"block {rec.sequence} of chain {chain_id} was edited (tampered block): "
                        + "; ".join(problems),
                        chain_id=chain_id,
                        sequence=rec.sequence,
                    )
                )
                untrusted.add(rec.sequence)
        report.blocks_checked += 1
        prev = rec
    return untrusted


def _check_store(
    chain_id: str,
    records: list[BlockRecord],
    store: CheckpointStore,
    keyring: Keyring,
    report: VerifyReport,
) -> int:
    """Compare the external checkpoints with the stored chain; returns events cut off."""
    by_seq = {r.sequence: r for r in records}
    es_max = max(by_seq) if by_seq else -1
    es_size = by_seq[es_max].checkpoint.tree_size if by_seq else 0
    beyond: list[Checkpoint] = []
    prev: Checkpoint | None = None
    for item in store.read(chain_id):
        if isinstance(item, CheckpointFormatError):
            report.findings.append(
                Finding(
                    FindingKind.BAD_SIGNATURE,
                    f"external checkpoint unreadable: {item}",
                    chain_id=chain_id,
                )
            )
            continue
        cp = item
        status = verify_checkpoint(cp, keyring)
        if status is not CheckpointStatus.OK:
            kind = _signature_finding(status)
            report.findings.append(
                Finding(
                    kind,
                    f"external checkpoint {cp.sequence} does not verify ({status})",
                    chain_id=chain_id,
                    sequence=cp.sequence,
                )
            )
            continue
        if prev is not None and prev.sequence + 1 == cp.sequence:
            for problem in chain_link_problems(prev, cp):
                report.findings.append(
                    Finding(
                        FindingKind.BAD_SIGNATURE,
                        f"external checkpoints {prev.sequence}->{cp.sequence}: {problem}",
                        chain_id=chain_id,
                        sequence=cp.sequence,
                    )
                )
        prev = cp
        rec = by_seq.get(cp.sequence)
        if rec is None:
            if cp.sequence > es_max:
                beyond.append(cp)
            else:
                report.findings.append(
                    Finding(
                        FindingKind.MISSING,
                        f"block {cp.sequence} of chain {chain_id} is in the checkpoint store "
                        "but not in audit-blocks",
                        chain_id=chain_id,
                        sequence=cp.sequence,
                    )
                )
        elif rec.checkpoint.digest() != cp.digest() or rec.checkpoint.signature != cp.signature:
            report.findings.append(
                Finding(
                    FindingKind.BAD_SIGNATURE,
                    f"block {cp.sequence} of chain {chain_id} differs from its external "
                    "checkpoint (the block was replaced)",
                    chain_id=chain_id,
                    sequence=cp.sequence,
                )
            )
    if not beyond:
        return 0
    newest = beyond[-1]
    lost = newest.tree_size - es_size
    what = (
        "every block of the chain is gone from audit-blocks"
        if es_max < 0
        else f"audit-blocks ends at block {es_max}"
    )
    report.findings.append(
        Finding(
            FindingKind.TRUNCATED,
            f"chain {chain_id} was truncated: the checkpoint store reaches block "
            f"{newest.sequence} (tree size {newest.tree_size}) but {what}; "
            f"{len(beyond)} blocks and {lost} sealed events are no longer anchored",
            chain_id=chain_id,
            sequence=beyond[0].sequence,
        )
    )
    return lost


def verify(
    es: Elasticsearch,
    keyring: Keyring,
    store: CheckpointStore | None,
    options: VerifyOptions | None = None,
) -> VerifyReport:
    """Verify blocks, checkpoints and events; see the module docstring."""
    options = options or VerifyOptions()
    began = time.monotonic()
    lo = options.time_from
    hi = options.time_to
    query: dict[str, Any] = {"match_all": {}}
    if lo is not None or hi is not None:
        rng: dict[str, str] = {}
        if lo is not None:
            rng["gte"] = lo
        if hi is not None:
            rng["lte"] = hi
        query = {"range": {"@timestamp": rng}}
    # The events are read (and hashed) from here on, while the blocks are checked.
    with LeafScan(
        es,
        EVENTS_PATTERN,
        query,
        options.page_size,
        options.slices,
        processes=options.processes,
    ) as scan:
        return _verify(es, keyring, store, options, scan, began)


def _verify(
    es: Elasticsearch,
    keyring: Keyring,
    store: CheckpointStore | None,
    options: VerifyOptions,
    scan: LeafScan,
    began: float,
) -> VerifyReport:
    report = VerifyReport()
    records, malformed = _load_blocks(es, options.chain_id)
    report.findings.extend(malformed)
    if store is None:
        report.warnings.append(
            "no external checkpoint store: deleting the newest blocks cannot be detected"
        )

    chains: dict[str, list[BlockRecord]] = {}
    for rec in records:
        chains.setdefault(rec.chain_id, []).append(rec)
    untrusted: dict[str, set[int]] = {}
    for chain_id, recs in chains.items():
        untrusted[chain_id] = _check_chain(recs, keyring, report)
    newest_ms = max((r.checkpoint.timestamp_ms for r in records), default=0)
    truncated_chains: list[str] = []
    if store is not None:
        store_chains = store.chains()
        if options.chain_id:
            store_chains = [c for c in store_chains if c == options.chain_id]
        for chain_id in sorted(set(store_chains) | set(chains)):
            if _check_store(chain_id, chains.get(chain_id, []), store, keyring, report):
                truncated_chains.append(chain_id)
            latest = store.latest(chain_id)
            if latest is not None:
                newest_ms = max(newest_ms, latest.timestamp_ms)
    for chain_id, recs in chains.items():
        report.chains[chain_id] = {
            "blocks": len(recs),
            "last_sequence": recs[-1].sequence,
            "tree_size": recs[-1].checkpoint.tree_size,
            "key_ids": sorted({r.checkpoint.key_id for r in recs}),
        }

    # Where every sealed event should be.
    lo = options.time_from
    hi = options.time_to
    expected: dict[str, _Sealed] = {}
    covered_untrusted: set[str] = set()
    for rec in records:
        if lo is not None or hi is not None:
            if rec.time_range is None:
                continue
            if (hi is not None and rec.time_range[0] > hi) or (
                lo is not None and rec.time_range[1] < lo
            ):
                continue
        bad = rec.sequence in untrusted[rec.chain_id]
        for pos, (eid, idx, lh) in enumerate(
            zip(rec.event_ids, rec.event_indices, rec.leaf_hashes, strict=True)
        ):
            if bad:
                covered_untrusted.add(eid)
            else:
                expected[eid] = _Sealed(rec.chain_id, rec.sequence, pos, lh, idx, rec)

    block_hash_sets: dict[tuple[str, int], set[bytes]] = {}

    def classify(eid: str, index: str, got: bytes | str, want: _Sealed) -> None:
        """Report a sealed event whose leaf hash is ``got`` (or why it has none)."""
        if isinstance(got, str):
            report.findings.append(
                Finding(
                    FindingKind.MODIFIED,
                    f"event cannot be hashed: {got}",
                    want.chain_id,
                    want.sequence,
                    eid,
                    index,
                )
            )
            return
        if got == want.leaf_hash:
            return
        key = (want.chain_id, want.sequence)
        hashes = block_hash_sets.get(key)
        if hashes is None:
            hashes = block_hash_sets[key] = set(want.block.leaf_hashes)
        if got in hashes:
            report.findings.append(
                Finding(
                    FindingKind.REORDERED,
                    f"event at leaf {want.position} of block {want.sequence} holds the content "
                    "sealed at another position of the same block",
                    want.chain_id,
                    want.sequence,
                    eid,
                    index,
                )
            )
        else:
            report.findings.append(
                Finding(
                    FindingKind.MODIFIED,
                    f"event changed since it was sealed at leaf {want.position} of block "
                    f"{want.sequence}",
                    want.chain_id,
                    want.sequence,
                    eid,
                    index,
                )
            )

    truncated_cause = (
        f"chain(s) {', '.join(truncated_chains)} truncated: see the truncated finding"
        if truncated_chains
        else None
    )
    if newest_ms == 0:
        newest_ms = time.time_ns() // 1_000_000
    pending_after_ms = newest_ms - int(options.grace_s * 1000)

    last_progress = began
    scanned = 0
    pop = expected.pop
    for ids, indices, hashes, ingested in scan.pages():
        for eid, index, got, ingested_text in zip(ids, indices, hashes, ingested, strict=True):
            want = pop(eid, None)
            if want is not None:
                # Hot path: compare inline; classify only on a mismatch.
                if got != want.leaf_hash:
                    classify(eid, index, got, want)
                continue
            if eid in covered_untrusted:
                continue
            ingested_ms = _ns_text_to_ms(ingested_text)
            if ingested_ms is not None and ingested_ms > pending_after_ms:
                report.events_pending += 1
                continue
            report.findings.append(
                Finding(
                    FindingKind.INSERTED,
                    "event is not covered by any block",
                    event_id=eid,
                    index=index,
                    cause=truncated_cause,
                )
            )
        scanned += len(ids)
        now = time.monotonic()
        if options.progress is not None and now - last_progress >= 1.0:
            options.progress(scanned, now - began)
            last_progress = now
    report.events_checked = scanned

    # Sealed events the scan did not see: out of the time range, removed by the policy
    # (a signed lifecycle record says so), or gone.
    deletions = options.policy_deletions
    if deletions:
        for eid, want in list(expected.items()):
            leaf = want.block.first_leaf + want.position
            if deletions.covers(want.chain_id, leaf, want.index):
                del expected[eid]
                report.events_archived += 1
    leftover = list(expected.items())
    for i in range(0, len(leftover), 1000):
        chunk = leftover[i : i + 1000]
        resp = es.mget(docs=[{"_index": w.index, "_id": eid} for eid, w in chunk])
        for (eid, want), doc in zip(chunk, resp["docs"], strict=True):
            if doc.get("found"):
                report.events_checked += 1
                try:
                    found: bytes | str = leaf_hash_of_document(doc["_source"])
                except IntegrityError as exc:
                    found = str(exc)
                classify(eid, want.index, found, want)
            else:
                report.findings.append(
                    Finding(
                        FindingKind.MISSING,
                        f"event sealed at leaf {want.position} of block {want.sequence} "
                        "is not in Elasticsearch",
                        want.chain_id,
                        want.sequence,
                        eid,
                        want.index,
                    )
                )
    report.elapsed_s = time.monotonic() - began
    if options.progress is not None:
        options.progress(report.events_checked, report.elapsed_s)
    return report
