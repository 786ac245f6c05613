"""The verifier's decisions, as pure functions over parsed blocks, checkpoints and leaves.

Nothing here reads Elasticsearch or a clock: :func:`classify` gets the block records, the
external checkpoints, the hashed events, the read alias's indices and the verifier's own
time, and returns the report. :mod:`indexer.integrity.verify` gathers those inputs from
Elasticsearch and calls it, so what a property test proves about this module is what
``otel-audit verify`` does.

What is trusted:

- a block record whose checkpoint is signed by a key of the keyring, links to the previous
  *trusted* record of its chain and whose unsigned fields recompute to the signed roots;
- the verifier's clock (``now_ms``, ``scan_ms``) and its options (sealing deadline,
  heartbeat), never a field of a stored document or of an untrusted record.

An event no trusted block covers is ``pending`` while the verifier's clock is before
``scan_ms + seal_deadline_ms`` (the receiver had not yet had the time to seal it), and
``inserted`` after. Events listed only by untrusted records are ``inserted`` at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from indexer.integrity.blocks import BlockRecord
from otel_audit.integrity import (
    Checkpoint,
    CheckpointFormatError,
    CheckpointStatus,
    IntegrityError,
    Keyring,
    chain_link_problems,
    verify_checkpoint,
)

__all__ = [
    "ChainState",
    "EventLedger",
    "Finding",
    "FindingKind",
    "HashLookup",
    "PolicyView",
    "VerifyReport",
    "check_chain",
    "check_freshness",
    "check_store",
    "classify",
    "parse_blocks",
    "recheck_pending",
]


class FindingKind(StrEnum):
    """How a finding is classified."""

    MODIFIED = "modified"
    MISSING = "missing"
    INSERTED = "inserted"
    REORDERED = "reordered"
    MISPLACED = "misplaced"
    UNREACHABLE = "unreachable"
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
class VerifyReport:
    """Result of a verify: ``ok`` when nothing was altered; ``stale`` lists chains whose
    newest checkpoint is too old (``otel-audit verify`` exits 4 for those)."""

    findings: list[Finding] = field(default_factory=list)
    chains: dict[str, dict[str, Any]] = field(default_factory=dict)
    stale: dict[str, str] = field(default_factory=dict)
    """Chain id -> why its newest trusted checkpoint is too old (verifier's clock)."""
    blocks_checked: int = 0
    events_checked: int = 0
    events_pending: int = 0
    events_archived: int = 0
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    pending: dict[str, str] = field(default_factory=dict)
    """Event id -> index of the events no trusted block covers yet (before the deadline)."""
    anchors: dict[str, Checkpoint] = field(default_factory=dict)
    """Chain id -> checkpoint of its newest trusted block record (what the next links to)."""

    @property
    def ok(self) -> bool:
        """True when nothing was found (freshness is :attr:`stale`)."""
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
            "stale": bool(self.stale),
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
            "stale_chains": self.stale,
            "pending": [{"event_id": e, "index": i} for e, i in sorted(self.pending.items())],
            "warnings": self.warnings,
            "findings": [f.to_json_dict() for f in self.findings],
        }


class PolicyView:
    """What the lifecycle policy removed on purpose (signed records); see ``PolicyDeletions``."""

    def covers(self, chain: str, leaf: int, index: str) -> str | None:  # pragma: no cover
        """A description when the policy removed this sealed event, else None."""
        raise NotImplementedError


HashLookup = Callable[[Sequence[tuple[str, str]]], list["bytes | str | None"]]
"""``[(index, event id)] -> [leaf hash | why it cannot be hashed | None if absent]``."""


@dataclass(slots=True)
class ChainState:
    """One chain after its records were checked."""

    chain_id: str
    trusted: list[BlockRecord] = field(default_factory=list)
    """Trusted records kept for the event check (all, or those of the range checked)."""
    untrusted: list[BlockRecord] = field(default_factory=list)
    """Untrusted records kept (as :attr:`trusted`)."""
    newest_trusted: Checkpoint | None = None
    """Newest trusted checkpoint seen (audit-blocks or the external store)."""
    blocks: int = 0
    """Records read."""
    trusted_blocks: int = 0
    """Records found trusted (kept or not)."""
    last_trusted: Checkpoint | None = None
    """Checkpoint of the newest trusted record in audit-blocks."""
    last: Checkpoint | None = None
    """Checkpoint of the last record read (the highest sequence)."""
    untrusted_seen: bool = False
    """Whether any record was found untrusted (kept or not)."""
    key_ids: set[str] = field(default_factory=set)


def _parse_block(doc_id: str, source: Mapping[str, Any]) -> BlockRecord | Finding:
    """One ``(doc id, source)`` block document; a malformed one is a tampered block."""
    try:
        rec = BlockRecord.from_document(source)
        if rec.doc_id != doc_id:
            raise CheckpointFormatError(
                f"stored under _id {doc_id!r} but its checkpoint names {rec.doc_id!r}"
            )
        # Readers page through audit-blocks sorted by these two fields: one that lies
        # about its checkpoint would be read out of its chain's order.
        if source.get("chain_id") != rec.chain_id or source.get("sequence") != rec.sequence:
            raise CheckpointFormatError(
                "its chain_id/sequence fields do not match its signed checkpoint "
                f"({rec.chain_id!r}, {rec.sequence})"
            )
        return rec
    except IntegrityError as exc:
        return Finding(
            FindingKind.BAD_SIGNATURE,
            f"block record {doc_id} is malformed (tampered block): {exc}",
            chain_id=str(source.get("chain_id")) if isinstance(source, Mapping) else None,
        )


def parse_blocks(
    docs: Iterable[tuple[str, Mapping[str, Any]]],
) -> tuple[list[BlockRecord], list[Finding]]:
    """Parse ``(doc id, source)`` block documents; a malformed one is a tampered block."""
    records: list[BlockRecord] = []
    findings: list[Finding] = []
    for doc_id, source in docs:
        got = _parse_block(doc_id, source)
        if isinstance(got, Finding):
            findings.append(got)
        else:
            records.append(got)
    records.sort(key=lambda r: (r.chain_id, r.sequence))
    return records, findings


def _chain_ordered(
    docs: Iterable[tuple[str, Mapping[str, Any]]], report: VerifyReport
) -> Iterator[BlockRecord]:
    """Parsed records, one at a time, each chain's in rising sequence order (chains may
    interleave); a malformed record, or one out of its chain's order, is reported as a
    tampered block and not passed on."""
    last: dict[str, int] = {}
    for doc_id, source in docs:
        got = _parse_block(doc_id, source)
        if isinstance(got, Finding):
            report.findings.append(got)
            continue
        before = last.get(got.chain_id)
        if before is not None and got.sequence <= before:
            report.findings.append(
                Finding(
                    FindingKind.BAD_SIGNATURE,
                    f"block record {doc_id} was read after block {before} of its chain: "
                    "audit-blocks does not hold it where its signed sequence puts it "
                    "(tampered block)",
                    chain_id=got.chain_id,
                    sequence=got.sequence,
                )
            )
            continue
        last[got.chain_id] = got.sequence
        yield got


def _signature_finding(status: CheckpointStatus) -> FindingKind:
    if status is CheckpointStatus.UNKNOWN_KEY:
        return FindingKind.UNKNOWN_KEY
    return FindingKind.BAD_SIGNATURE


class _ChainCheck:
    """The record-by-record state of :func:`check_chain`: constant besides what ``keep``
    retains (the previous checkpoint, the sequence expected next, counts)."""

    def __init__(
        self,
        chain_id: str,
        keyring: Keyring,
        report: VerifyReport,
        *,
        anchor: Checkpoint | None = None,
        seal: Callable[[BlockRecord], bool] | None = None,
        start: int | None = None,
        keep: Callable[[BlockRecord], bool] | None = None,
    ) -> None:
        self.state = ChainState(chain_id, newest_trusted=anchor)
        self._keyring = keyring
        self._report = report
        self._seal = seal
        self._keep = keep
        self._prev: Checkpoint | None = anchor
        self._expect = anchor.sequence + 1 if anchor is not None else 0
        if start is not None:
            self._expect = start

    def _untrusted(self, rec: BlockRecord) -> None:
        self.state.untrusted_seen = True
        # Whatever the range: the events it lists are explained as listed by it alone.
        if self._keep is None or rec.event_ids:
            self.state.untrusted.append(rec)
        self._expect = rec.sequence + 1

    def feed(self, rec: BlockRecord) -> None:
        """Check the next record of the chain (records come in rising sequence order)."""
        state = self.state
        report = self._report
        chain_id = state.chain_id
        state.blocks += 1
        state.last = rec.checkpoint
        state.key_ids.add(rec.checkpoint.key_id)
        expect = self._expect
        if rec.sequence < expect:
            return
        report.blocks_checked += 1
        cp = rec.checkpoint
        if rec.sequence > expect:
            report.findings.append(
                Finding(
                    FindingKind.MISSING,
                    f"blocks {expect}..{rec.sequence - 1} of chain {chain_id} are missing "
                    "from audit-blocks",
                    chain_id=chain_id,
                    sequence=expect,
                )
            )
            # Nothing after a gap links to a trusted record; the signed previous hash
            # still names the one before, so only the link check is skipped.
            self._prev = None
        prev = self._prev
        status = verify_checkpoint(cp, self._keyring)
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
            self._untrusted(rec)
            return
        problems: list[str] = []
        linked = prev is not None and prev.sequence + 1 == rec.sequence
        if linked or (rec.sequence == 0 and prev is None):
            problems.extend(chain_link_problems(prev if linked else None, cp))
        if self._seal is None or self._seal(rec):
            problems.extend(rec.seal_problems(prev if linked else None))
        elif linked and prev is not None and rec.first_leaf != prev.tree_size:
            problems.append(f"first_leaf {rec.first_leaf} != previous tree size {prev.tree_size}")
        if problems:
            report.findings.append(
                Finding(
                    FindingKind.BAD_SIGNATURE,
                    f"block {rec.sequence} of chain {chain_id} was edited or does not chain "
                    f"(tampered block): {'; '.join(problems)}",
                    chain_id=chain_id,
                    sequence=rec.sequence,
                )
            )
            self._untrusted(rec)
            return
        if self._keep is None or self._keep(rec):
            state.trusted.append(rec)
        state.trusted_blocks += 1
        state.last_trusted = cp
        self._prev = cp
        self._expect = rec.sequence + 1
        # At one sequence the record wins over the external store's checkpoint.
        if state.newest_trusted is None or cp.sequence >= state.newest_trusted.sequence:
            state.newest_trusted = cp


def check_chain(
    records: Sequence[BlockRecord],
    keyring: Keyring,
    report: VerifyReport,
    *,
    anchor: Checkpoint | None = None,
    seal: Callable[[BlockRecord], bool] | None = None,
    start: int | None = None,
) -> ChainState:
    """Signature, link and seal checks of one chain's records (sorted by sequence).

    A record is trusted only when its signature verifies, it links to the previous
    trusted record (or, for the first one checked, to ``anchor`` / the genesis) and its
    unsigned fields recompute to the signed roots. An untrusted record is never the
    previous checkpoint of the next one. ``seal(rec)`` false skips the leaf recomputation
    of a record whose events are not checked (a range verify); its signature and link
    are still checked. ``start`` is the first sequence expected (default: after
    ``anchor``, or 0).
    """
    check = _ChainCheck(
        records[0].chain_id if records else "",
        keyring,
        report,
        anchor=anchor,
        seal=seal,
        start=start,
    )
    for rec in records:
        check.feed(rec)
    return check.state


class _StoreCheck:
    """:func:`check_store` record by record: the external checkpoints (in sequence order)
    are merged with the chain's records (in sequence order), so neither is held whole."""

    def __init__(
        self,
        chain_id: str,
        external: Iterable[Checkpoint | CheckpointFormatError],
        keyring: Keyring,
        report: VerifyReport,
        state: ChainState | None = None,
        realtime: Callable[[str, int], Checkpoint | None] | None = None,
    ) -> None:
        self._chain_id = chain_id
        self._external = iter(external)
        self._keyring = keyring
        self._report = report
        self._state = state
        self._realtime = realtime
        self._prev: Checkpoint | None = None
        self._head: Checkpoint | None = None
        self._es_max = -1
        self._es_size = 0

    def _finding(self, kind: FindingKind, message: str, sequence: int | None = None) -> None:
        self._report.findings.append(Finding(kind, message, self._chain_id, sequence))

    def _peek(self) -> Checkpoint | None:
        """The next external checkpoint that verifies (the others are findings)."""
        chain_id = self._chain_id
        while self._head is None:
            item = next(self._external, None)
            if item is None:
                return None
            if isinstance(item, CheckpointFormatError):
                self._finding(FindingKind.BAD_SIGNATURE, f"external checkpoint unreadable: {item}")
                continue
            cp = item
            status = verify_checkpoint(cp, self._keyring)
            if status is not CheckpointStatus.OK or cp.origin != chain_id:
                self._finding(
                    _signature_finding(status),
                    f"external checkpoint {cp.sequence} does not verify "
                    f"({status if cp.origin == chain_id else 'names chain ' + cp.origin})",
                    cp.sequence,
                )
                continue
            prev = self._prev
            if prev is not None and prev.sequence + 1 == cp.sequence:
                for problem in chain_link_problems(prev, cp):
                    self._finding(
                        FindingKind.BAD_SIGNATURE,
                        f"external checkpoints {prev.sequence}->{cp.sequence}: {problem}",
                        cp.sequence,
                    )
            self._prev = cp
            st = self._state
            if st is not None and (
                st.newest_trusted is None or cp.sequence > st.newest_trusted.sequence
            ):
                st.newest_trusted = cp
            self._head = cp
        return self._head

    def feed(self, rec: BlockRecord) -> None:
        """The chain's next record in audit-blocks (rising sequence)."""
        while (cp := self._peek()) is not None and cp.sequence <= rec.sequence:
            self._head = None
            if cp.sequence < rec.sequence:
                self._finding(
                    FindingKind.MISSING,
                    f"block {cp.sequence} of chain {self._chain_id} is in the checkpoint store "
                    "but not in audit-blocks",
                    cp.sequence,
                )
            elif rec.checkpoint.digest() != cp.digest() or rec.checkpoint.signature != cp.signature:
                self._finding(
                    FindingKind.BAD_SIGNATURE,
                    f"block {cp.sequence} of chain {self._chain_id} differs from its external "
                    "checkpoint (the block was replaced)",
                    cp.sequence,
                )
        self._es_max = rec.sequence
        self._es_size = rec.checkpoint.tree_size

    def finish(self) -> int:
        """The external checkpoints beyond the last record; returns the events cut off."""
        chain_id = self._chain_id
        beyond: list[Checkpoint] = []
        while (cp := self._peek()) is not None:
            self._head = None
            if cp.sequence <= self._es_max:
                # Only a store that does not list in sequence order gets here.
                self._finding(
                    FindingKind.BAD_SIGNATURE,
                    f"external checkpoint {cp.sequence} of chain {chain_id} is out of "
                    "sequence order in the checkpoint store",
                    cp.sequence,
                )
                continue
            found = self._realtime(chain_id, cp.sequence) if self._realtime else None
            if (
                found is not None
                and found.digest() == cp.digest()
                and found.signature == cp.signature
            ):
                continue
            beyond.append(cp)
        if not beyond:
            return 0
        es_max = self._es_max
        newest = beyond[-1]
        lost = max(0, newest.tree_size - self._es_size)
        what = (
            "every block of the chain is gone from audit-blocks"
            if es_max < 0
            else f"audit-blocks ends at block {es_max}"
        )
        self._finding(
            FindingKind.TRUNCATED,
            f"chain {chain_id} was truncated: the checkpoint store reaches block "
            f"{newest.sequence} (tree size {newest.tree_size}) but {what}; "
            f"{len(beyond)} blocks and {lost} sealed events are no longer anchored",
            beyond[0].sequence,
        )
        return max(lost, 1)


def check_store(
    chain_id: str,
    records: Sequence[BlockRecord],
    external: Iterable[Checkpoint | CheckpointFormatError],
    keyring: Keyring,
    report: VerifyReport,
    state: ChainState | None = None,
    realtime: Callable[[str, int], Checkpoint | None] | None = None,
) -> int:
    """Compare the external checkpoints (in sequence order) with the stored chain's
    records (sorted by sequence); returns events cut off.

    A verified external checkpoint newer than ``state.newest_trusted`` becomes it.
    ``realtime(chain, sequence)`` reads one block record by id, in real time: the sealer
    appends a checkpoint right after Elasticsearch accepted its record, before a refresh
    makes the record searchable, so a checkpoint beyond the searched blocks whose record
    exists, with the same signed checkpoint, was written after the search, not cut off.
    """
    check = _StoreCheck(chain_id, external, keyring, report, state, realtime)
    for rec in records:
        check.feed(rec)
    return check.finish()


def check_freshness(
    states: Iterable[ChainState], now_ms: int, stale_after_ms: int, report: VerifyReport
) -> None:
    """Mark each chain whose newest trusted checkpoint is older than ``stale_after_ms``.

    The age is the verifier's clock minus the signed checkpoint time; 0 turns it off.
    """
    if stale_after_ms <= 0:
        return
    for st in states:
        cp = st.newest_trusted
        if cp is None:
            if st.untrusted_seen:
                report.stale[st.chain_id] = "the chain has no trusted checkpoint"
            continue
        age = now_ms - cp.timestamp_ms
        if age > stale_after_ms:
            report.stale[st.chain_id] = (
                f"newest trusted checkpoint (sequence {cp.sequence}) was signed "
                f"{age / 1000:.0f} s ago, more than the {stale_after_ms / 1000:.0f} s a live "
                "receiver's heartbeat allows: newer data may have been cut off"
            )


@dataclass(slots=True)
class _Sealed:
    chain_id: str
    sequence: int
    position: int
    leaf_hash: bytes
    index: str
    block: BlockRecord


class EventLedger:
    """Where every sealed event should be, and what the stored events turned out to be."""

    def __init__(
        self,
        report: VerifyReport,
        *,
        truncated_cause: str | None = None,
    ) -> None:
        self.report = report
        self.expected: dict[str, _Sealed] = {}
        self.untrusted_only: dict[str, str] = {}
        self.uncovered: dict[str, str] = {}
        self.sealed_indices: dict[str, int] = {}
        self._hash_sets: dict[tuple[str, int], set[bytes]] = {}
        self._truncated_cause = truncated_cause

    def add_trusted(self, rec: BlockRecord) -> None:
        """Expect every event of a trusted block (a later block's claim wins)."""
        for pos, (eid, idx, lh) in enumerate(
            zip(rec.event_ids, rec.event_indices, rec.leaf_hashes, strict=True)
        ):
            self.expected[eid] = _Sealed(rec.chain_id, rec.sequence, pos, lh, idx, rec)
            self.untrusted_only.pop(eid, None)

    def add_untrusted(self, rec: BlockRecord) -> None:
        """An untrusted record covers nothing; remember it to explain the inserted events."""
        for eid in rec.event_ids:
            if eid not in self.expected:
                self.untrusted_only[eid] = f"listed only by untrusted block {rec.sequence}"

    def _classify(self, eid: str, index: str, got: bytes | str, want: _Sealed) -> None:
        findings = self.report.findings
        if index != want.index:
            findings.append(
                Finding(
                    FindingKind.MISPLACED,
                    f"event sealed in {want.index} at leaf {want.position} of block "
                    f"{want.sequence} is stored in {index}",
                    want.chain_id,
                    want.sequence,
                    eid,
                    index,
                )
            )
        if isinstance(got, str):
            findings.append(
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
        hashes = self._hash_sets.get(key)
        if hashes is None:
            hashes = self._hash_sets[key] = set(want.block.leaf_hashes)
        if got in hashes:
            findings.append(
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
            findings.append(
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

    def observe(
        self, ids: Sequence[str], indices: Sequence[str], hashes: Sequence[bytes | str]
    ) -> None:
        """Compare one page of stored events with where and what they were sealed as."""
        pop = self.expected.pop
        sealed_indices = self.sealed_indices
        for eid, index, got in zip(ids, indices, hashes, strict=True):
            want = pop(eid, None)
            if want is not None:
                sealed_indices[index] = sealed_indices.get(index, 0) + 1
                # Hot path: compare inline; classify only on a mismatch.
                if got != want.leaf_hash or index != want.index:
                    self._classify(eid, index, got, want)
                continue
            self.uncovered[eid] = index
        self.report.events_checked += len(ids)

    def settle_leftovers(self, lookup: HashLookup, policy: PolicyView | None) -> None:
        """Sealed events the scan did not see: archived by the policy, elsewhere, or gone."""
        report = self.report
        if policy:
            for eid, want in list(self.expected.items()):
                leaf = want.block.first_leaf + want.position
                if policy.covers(want.chain_id, leaf, want.index):
                    del self.expected[eid]
                    report.events_archived += 1
        leftover = list(self.expected.items())
        self.expected.clear()
        for i in range(0, len(leftover), 1000):
            chunk = leftover[i : i + 1000]
            found = lookup([(w.index, eid) for eid, w in chunk])
            for (eid, want), got in zip(chunk, found, strict=True):
                if got is None:
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
                else:
                    report.events_checked += 1
                    self._classify(eid, want.index, got, want)

    def settle_uncovered(self, *, overdue: bool) -> None:
        """Events no trusted block covers: inserted when overdue (or listed only by an
        untrusted record), else pending."""
        report = self.report
        for eid, index in self.uncovered.items():
            why = self.untrusted_only.get(eid)
            if why is None and not overdue:
                report.pending[eid] = index
                continue
            report.findings.append(
                Finding(
                    FindingKind.INSERTED,
                    "event is not covered by any trusted block"
                    + (f" ({why})" if why else " within the sealing deadline"),
                    event_id=eid,
                    index=index,
                    cause=self._truncated_cause,
                )
            )
        self.uncovered = {}
        report.events_pending = len(report.pending)

    def check_reachable(self, alias: str, alias_indices: Iterable[str]) -> None:
        """Every index that holds sealed events must be read through ``alias``."""
        members = set(alias_indices)
        for index, n in sorted(self.sealed_indices.items()):
            if index not in members:
                self.report.findings.append(
                    Finding(
                        FindingKind.UNREACHABLE,
                        f"index {index} holds {n} sealed events but is not reachable through "
                        f"the read alias {alias} (the query API and Kibana do not see them)",
                        index=index,
                    )
                )


def _truncated_cause(report: VerifyReport) -> str | None:
    """Why uncovered events are expected: chains whose newest blocks were cut off."""
    chains = sorted({str(f.chain_id) for f in report.findings if f.kind is FindingKind.TRUNCATED})
    if not chains:
        return None
    return f"chain(s) {', '.join(chains)} truncated: see the truncated finding"


@dataclass(slots=True)
class Inputs:
    """Everything :func:`classify` decides on; gathered by :mod:`indexer.integrity.verify`."""

    block_docs: Iterable[tuple[str, Mapping[str, Any]]]
    keyring: Keyring
    external: Mapping[str, Iterable[Checkpoint | CheckpointFormatError]] | None
    pages: Iterable[tuple[Sequence[str], Sequence[str], Sequence[bytes | str]]]
    lookup: HashLookup
    alias: str
    alias_indices: Iterable[str] | Callable[[], Iterable[str]]
    now_ms: int
    scan_ms: int
    seal_deadline_ms: int
    stale_after_ms: int
    chain_id: str | None = None
    in_range: Callable[[BlockRecord], bool] | None = None
    policy: PolicyView | None = None
    anchor: Checkpoint | None = None
    realtime_block: Callable[[str, int], Checkpoint | None] | None = None


def classify(inp: Inputs, report: VerifyReport | None = None) -> VerifyReport:
    """Check the chains, the external checkpoints, freshness, and every event; pure.

    ``inp.block_docs`` is consumed one record at a time and must list each chain's
    records in sequence order (chains may interleave); a record out of that order is
    reported as tampered. With ``inp.in_range`` only the records it accepts are kept for
    the event check, so the memory held follows the range, not the history.
    """
    report = report or VerifyReport()
    external = inp.external
    checks: dict[str, _ChainCheck] = {}
    stores: dict[str, _StoreCheck] = {}

    def store_check(chain_id: str, st: ChainState) -> _StoreCheck | None:
        if external is None:
            return None
        sc = stores.get(chain_id)
        if sc is None:
            sc = stores[chain_id] = _StoreCheck(
                chain_id,
                external.get(chain_id, ()),
                inp.keyring,
                report,
                st,
                realtime=inp.realtime_block,
            )
        return sc

    for rec in _chain_ordered(inp.block_docs, report):
        chain_id = rec.chain_id
        if inp.chain_id is not None and chain_id != inp.chain_id:
            continue
        check = checks.get(chain_id)
        if check is None:
            anchor = (
                inp.anchor if inp.anchor is not None and inp.anchor.origin == chain_id else None
            )
            check = checks[chain_id] = _ChainCheck(
                chain_id, inp.keyring, report, anchor=anchor, seal=inp.in_range, keep=inp.in_range
            )
        check.feed(rec)
        sc = store_check(chain_id, check.state)
        if sc is not None:
            sc.feed(rec)
    states: dict[str, ChainState] = {c: checks[c].state for c in sorted(checks)}
    if external is not None:
        for chain_id in sorted(set(external) | set(states)):
            if inp.chain_id is not None and chain_id != inp.chain_id:
                continue
            st = states.setdefault(chain_id, ChainState(chain_id))
            sc = store_check(chain_id, st)
            assert sc is not None
            sc.finish()
    for chain_id, st in states.items():
        if st.last_trusted is not None:
            report.anchors[chain_id] = st.last_trusted
        elif st.blocks and inp.anchor is not None and inp.anchor.origin == chain_id:
            report.anchors[chain_id] = inp.anchor
    for chain_id, st in states.items():
        if not st.blocks or st.last is None:
            continue
        report.chains[chain_id] = {
            "blocks": st.blocks,
            "trusted_blocks": st.trusted_blocks,
            "last_sequence": st.last.sequence,
            "tree_size": st.last.tree_size,
            "key_ids": sorted(st.key_ids),
        }
    check_freshness(states.values(), inp.now_ms, inp.stale_after_ms, report)

    ledger = EventLedger(report, truncated_cause=_truncated_cause(report))
    for st in states.values():
        for rec in st.untrusted:
            ledger.add_untrusted(rec)
        for rec in st.trusted:
            ledger.add_trusted(rec)
    for ids, indices, hashes in inp.pages:
        ledger.observe(ids, indices, hashes)
    ledger.settle_leftovers(inp.lookup, inp.policy)
    ledger.settle_uncovered(overdue=inp.now_ms >= inp.scan_ms + inp.seal_deadline_ms)
    members = inp.alias_indices() if callable(inp.alias_indices) else inp.alias_indices
    ledger.check_reachable(inp.alias, members)
    return report


def recheck_pending(
    report: VerifyReport,
    new_block_docs: Iterable[tuple[str, Mapping[str, Any]]],
    keyring: Keyring,
    lookup: HashLookup,
    *,
    seen: Mapping[str, int],
    overdue: bool,
) -> VerifyReport:
    """Settle ``report.pending`` with the block records written since the first pass.

    Only records after the last sequence ``seen`` of each chain count, and they must
    link to its :attr:`VerifyReport.anchors`; a pending event they cover is checked like
    any sealed event, one they do not is ``inserted`` when ``overdue`` and stays pending
    otherwise.
    """
    pending = report.pending
    report.pending = {}
    records, malformed = parse_blocks(new_block_docs)
    report.findings.extend(malformed)
    by_chain: dict[str, list[BlockRecord]] = {}
    for rec in records:
        if rec.sequence > seen.get(rec.chain_id, -1):
            by_chain.setdefault(rec.chain_id, []).append(rec)
    ledger = EventLedger(report, truncated_cause=_truncated_cause(report))
    for chain_id, recs in by_chain.items():
        st = check_chain(
            recs,
            keyring,
            report,
            anchor=report.anchors.get(chain_id),
            start=seen.get(chain_id, -1) + 1,
        )
        for rec in st.untrusted:
            ledger.add_untrusted(rec)
        for rec in st.trusted:
            ledger.add_trusted(rec)
        if st.trusted:
            report.anchors[chain_id] = st.trusted[-1].checkpoint
    ledger.expected = {e: w for e, w in ledger.expected.items() if e in pending}
    items = list(pending.items())
    found = lookup([(index, eid) for eid, index in items]) if items else []
    report.events_checked -= len(items)
    for (eid, index), got in zip(items, found, strict=True):
        if got is not None:
            ledger.observe([eid], [index], [got])
    ledger.settle_leftovers(lookup, None)
    ledger.settle_uncovered(overdue=overdue)
    return report
