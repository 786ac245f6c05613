"""A checkpoint appended right after its block record was accepted, before a refresh made
the record searchable, is not a truncation; a deleted or replaced record still is."""

from __future__ import annotations

import dataclasses

from indexer.integrity.blocks import BlockRecord, block_doc_id
from indexer.integrity.classify import FindingKind
from otel_audit.integrity import Checkpoint, Keyring, generate_private_key, sign_checkpoint
from tests.support.integrity_model import CHAIN, T0_MS, build, run

KEY = generate_private_key()
RING = Keyring([KEY.public_key()])


def _hide_newest(sizes: tuple[int, ...]) -> tuple[object, Checkpoint]:
    store = build(KEY, sizes)
    newest = block_doc_id(CHAIN, len(sizes) - 1)
    cp = BlockRecord.from_document(store.blocks.pop(newest)).checkpoint
    return store, cp


def _kinds(report: object) -> set[FindingKind]:
    return {f.kind for f in report.findings}  # type: ignore[attr-defined]


def test_a_record_not_yet_searchable_is_not_a_truncation() -> None:
    store, cp = _hide_newest((3, 3, 3))
    scan = T0_MS + 3_000
    report = run(store, RING, scan_ms=scan, now_ms=scan, realtime_block=lambda c, s: cp)
    assert report.findings == []
    assert len(report.pending) == 3  # its events wait for the next run


def test_a_deleted_record_is_a_truncation() -> None:
    store, _ = _hide_newest((3, 3, 3))
    scan = T0_MS + 3_000
    report = run(store, RING, scan_ms=scan, now_ms=scan, realtime_block=lambda c, s: None)
    assert FindingKind.TRUNCATED in _kinds(report)


def test_a_replaced_record_is_a_truncation() -> None:
    store, cp = _hide_newest((3, 3, 3))
    forged = sign_checkpoint(dataclasses.replace(cp, signature=b""), generate_private_key())
    scan = T0_MS + 3_000
    report = run(store, RING, scan_ms=scan, now_ms=scan, realtime_block=lambda c, s: forged)
    assert FindingKind.TRUNCATED in _kinds(report)
