"""Tampering done directly in Elasticsearch is detected and classified."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from indexer.indices import BLOCKS_INDEX, EVENTS_ALIAS
from indexer.integrity.blocks import KIND_BLOCK, BlockRecord
from indexer.integrity.checkpoint_store import DirectoryCheckpointStore
from indexer.integrity.classify import Inputs, classify
from indexer.integrity.leaf_scan import hash_hits
from indexer.integrity.prove import ProveError, prove
from otel_audit.integrity import (
    Checkpoint,
    CompactRange,
    Keyring,
    generate_private_key,
    leaf_hash_of_document,
    make_checkpoint,
    sign_checkpoint,
    verify_bundle,
    write_key_pair,
)
from tests.support.integrity_harness import ingest, kinds, run, run_verify

pytestmark = pytest.mark.integration

KEY = generate_private_key()


@pytest.fixture
def sealed(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> tuple[Elasticsearch, Path, list[str]]:
    ids = run(ingest(es_url, tmp_path, KEY, [60, 60, 30]))
    report = run_verify(clean_es, tmp_path, [KEY])
    assert report.ok, report.to_json_dict()
    assert report.events_checked == 150 and report.blocks_checked >= 3
    return clean_es, tmp_path, ids


def _where(es: Elasticsearch, event_id: str) -> tuple[str, dict[str, Any]]:
    hit = es.search(index="audit-events-*", query={"ids": {"values": [event_id]}})["hits"]["hits"][
        0
    ]
    return hit["_index"], hit["_source"]


def _blocks(es: Elasticsearch) -> list[dict[str, Any]]:
    es.indices.refresh(index=BLOCKS_INDEX)
    hits: list[dict[str, Any]] = es.search(
        index=BLOCKS_INDEX, sort=[{"sequence": "asc"}], size=1000
    )["hits"]["hits"]
    return hits


def test_modified_event(sealed: Any) -> None:
    es, state, ids = sealed
    index, doc = _where(es, ids[10])
    doc["message"] = "invoice inv-10 deleted"
    es.index(index=index, id=ids[10], document=doc)
    report = run_verify(es, state, [KEY])
    assert kinds(report) == {"modified": 1}
    assert report.findings[0].event_id == ids[10]


def test_deleted_event(sealed: Any) -> None:
    es, state, ids = sealed
    index, _ = _where(es, ids[3])
    es.delete(index=index, id=ids[3])
    report = run_verify(es, state, [KEY])
    assert kinds(report) == {"missing": 1}
    assert report.findings[0].event_id == ids[3]


def test_inserted_event(sealed: Any) -> None:
    es, state, ids = sealed
    index, doc = _where(es, ids[0])
    doc["event"]["id"] = "0190aaaa-0000-7000-8000-000000000001"
    es.create(index=index, id=doc["event"]["id"], document=doc)
    report = run_verify(es, state, [KEY])
    assert kinds(report) == {"inserted": 1}
    assert report.findings[0].event_id == doc["event"]["id"]


def test_swapped_events(sealed: Any) -> None:
    es, state, ids = sealed
    (ia, a), (ib, b) = _where(es, ids[1]), _where(es, ids[2])
    es.index(index=ia, id=ids[1], document=b)
    es.index(index=ib, id=ids[2], document=a)
    report = run_verify(es, state, [KEY])
    assert kinds(report) == {"reordered": 2}
    assert {f.event_id for f in report.findings} == {ids[1], ids[2]}


def test_deleted_newest_blocks(sealed: Any) -> None:
    es, state, _ids = sealed
    blocks = _blocks(es)
    for hit in blocks[-2:]:
        es.delete(index=BLOCKS_INDEX, id=hit["_id"])
    report = run_verify(es, state, [KEY])
    counts = kinds(report)
    assert counts.get("truncated") == 1
    assert set(counts) <= {"truncated", "inserted"}
    assert all(f.cause for f in report.findings if f.kind == "inserted")


def test_deleted_blocks_index(sealed: Any) -> None:
    es, state, ids = sealed
    es.indices.delete(index=BLOCKS_INDEX)
    report = run_verify(es, state, [KEY])
    counts = kinds(report)
    assert counts == {"truncated": 1, "inserted": len(ids)}
    truncated = next(f for f in report.findings if f.kind == "truncated")
    assert "every block" in truncated.message


def test_block_replaced_with_other_key(sealed: Any) -> None:
    es, state, _ids = sealed
    hit = _blocks(es)[1]
    rec = BlockRecord.from_document(hit["_source"])
    forged = sign_checkpoint(rec.checkpoint, generate_private_key())
    doc = hit["_source"] | {"checkpoint": forged.to_json_dict(), "key_id": forged.key_id}
    es.index(index=BLOCKS_INDEX, id=hit["_id"], document=doc)
    report = run_verify(es, state, [KEY])
    counts = kinds(report)
    assert counts.get("unknown_key") == 1
    # The replaced block covers nothing: its events count as inserted.
    assert counts.get("inserted") == len(rec.event_ids)
    assert set(counts) <= {"unknown_key", "bad_signature", "inserted"}


def test_restored_old_index(sealed: Any, es_url: str) -> None:
    es, state, ids = sealed
    index, _ = _where(es, ids[0])
    repo = "otel-audit-test-repo"
    # A fresh location each run: path.repo outlives the test, and so do its snapshots.
    location = f"tamper-{uuid.uuid4().hex}"
    es.snapshot.create_repository(
        name=repo, repository={"type": "fs", "settings": {"location": location}}
    )
    es.snapshot.create(repository=repo, snapshot="old", indices=index, wait_for_completion=True)
    more = run(ingest(es_url, state, KEY, [20], start=1000))
    assert run_verify(es, state, [KEY]).ok
    es.indices.close(index=index)
    es.snapshot.restore(repository=repo, snapshot="old", indices=index, wait_for_completion=True)
    report = run_verify(es, state, [KEY])
    assert kinds(report) == {"missing": 20}
    assert {f.event_id for f in report.findings} == set(more)
    es.snapshot.delete(repository=repo, snapshot="old")


def test_rotated_keys_and_offline_proof(sealed: Any, es_url: str, tmp_path: Path) -> None:
    es, state, ids = sealed
    new_key = generate_private_key()
    more = run(ingest(es_url, state, new_key, [10], start=2000))
    assert run_verify(es, state, [KEY, new_key]).ok
    only_new = run_verify(es, state, [new_key])
    assert set(kinds(only_new)) == {"unknown_key", "inserted"}
    assert kinds(only_new)["inserted"] == len(ids)
    bundle = prove(es, more[0])
    ring = Keyring([new_key.public_key()])
    assert verify_bundle(bundle, ring).ok
    proof = tmp_path / "proof.json"
    proof.write_bytes(json.dumps(bundle.to_json_dict()).encode())
    pub = write_key_pair(new_key, tmp_path / "verifier-keys").public_key_path
    cli = [sys.executable, "-m", "otel_audit.cli", "verify-proof", str(proof)]
    # stdin closed: the command must never wait for input it was not asked to read.
    ok = subprocess.run(
        [*cli, "--public-key", str(pub)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert b"OK: event" in ok.stdout
    other = write_key_pair(KEY, tmp_path / "old-keys").public_key_path
    bad = subprocess.run(
        [*cli, "--public-key", str(other)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    assert bad.returncode != 0 and b"FAILED" in bad.stdout
    old = prove(es, ids[0])
    assert verify_bundle(old, Keyring([KEY.public_key()])).ok


# Attacks by an Elasticsearch administrator without the signing key: nothing they write
# may decide what verify reports.


def _forge_event(es: Elasticsearch, ids: list[str], new_id: str, ingested: str) -> str:
    index, doc = _where(es, ids[0])
    doc["event"]["id"] = new_id
    doc["event"]["ingested"] = ingested
    doc["message"] = "user admin granted superuser"
    es.create(index=index, id=new_id, document=doc, refresh=True)
    return index


def _now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())


def test_forged_event_ingested_in_the_future(sealed: Any) -> None:
    es, state, ids = sealed
    forged = "0190aaaa-0000-7000-8000-0000000000f1"
    _forge_event(es, ids, forged, "2200-01-01T00:00:00.000000000Z")
    report = run_verify(es, state, [KEY], seal_deadline_s=0.5)
    assert kinds(report) == {"inserted": 1}
    assert report.findings[0].event_id == forged


def test_forged_event_ingested_now_checked_after_the_deadline(sealed: Any) -> None:
    es, state, ids = sealed
    forged = "0190aaaa-0000-7000-8000-0000000000f2"
    _forge_event(es, ids, forged, _now_text())
    began = time.monotonic()
    report = run_verify(es, state, [KEY], seal_deadline_s=1.0)
    # The verifier waited for the deadline by its own clock, then found no trusted block.
    assert time.monotonic() - began >= 1.0
    assert kinds(report) == {"inserted": 1}
    # Told not to wait, it reports the event pending, never clean-and-sealed.
    quick = run_verify(es, state, [KEY], seal_deadline_s=600.0, max_wait_s=0.0)
    assert quick.ok and quick.events_pending == 1 and forged in quick.pending
    assert any("not covered by a trusted block" in w for w in quick.warnings)


def _forged_block(es: Elasticsearch, ids: list[str], sign_with: Any) -> tuple[str, str]:
    """Append a block record listing a forged event, signed by ``sign_with`` (or unsigned)."""
    forged = "0190aaaa-0000-7000-8000-0000000000f3"
    index = _forge_event(es, ids, forged, _now_text())
    last = BlockRecord.from_document(_blocks(es)[-1]["_source"])
    cr = CompactRange.from_state(last.first_leaf, last.frontier)
    cr.extend(list(last.leaf_hashes))
    first, frontier = cr.state()
    leaf = leaf_hash_of_document(es.get(index=index, id=forged)["_source"])
    cr.append(leaf)
    cp = make_checkpoint(
        origin=last.chain_id,
        tree_size=cr.size,
        root_hash=cr.root(),
        sequence=last.sequence + 1,
        previous_hash=last.checkpoint.digest(),
    )
    if sign_with is None:
        cp = dataclasses.replace(cp, key_id=last.checkpoint.key_id, signature=bytes(64))
    else:
        cp = sign_checkpoint(cp, sign_with)
    rec = BlockRecord(
        kind=KIND_BLOCK,
        checkpoint=cp,
        first_leaf=first,
        event_ids=(forged,),
        event_indices=(index,),
        leaf_hashes=(leaf,),
        frontier=frontier,
        time_range=last.time_range,
    )
    es.create(index=BLOCKS_INDEX, id=rec.doc_id, document=rec.to_document(), refresh=True)
    return forged, rec.doc_id


@pytest.mark.parametrize("signer", ["untrusted-key", "unsigned"])
def test_forged_block_listing_forged_events(sealed: Any, signer: str) -> None:
    es, state, ids = sealed
    forged, _ = _forged_block(
        es, ids, generate_private_key() if signer == "untrusted-key" else None
    )
    report = run_verify(es, state, [KEY])
    counts = kinds(report)
    assert counts == {
        "unknown_key" if signer == "untrusted-key" else "bad_signature": 1,
        "inserted": 1,
    }
    inserted = next(f for f in report.findings if f.kind == "inserted")
    assert inserted.event_id == forged and "untrusted block" in inserted.message


def test_alias_removed_from_a_sealed_index(sealed: Any) -> None:
    es, state, ids = sealed
    index, _ = _where(es, ids[0])
    es.indices.delete_alias(index=index, name=EVENTS_ALIAS)
    report = run_verify(es, state, [KEY])
    assert kinds(report) == {"unreachable": 1}
    assert report.findings[0].index == index


def test_sealed_event_moved_to_another_index(sealed: Any) -> None:
    es, state, ids = sealed
    index, doc = _where(es, ids[7])
    other = "audit-events-2031.01.01"
    es.delete(index=index, id=ids[7])
    es.create(index=other, id=ids[7], document=doc, refresh=True)
    report = run_verify(es, state, [KEY])
    assert kinds(report) == {"misplaced": 1}
    assert report.findings[0].event_id == ids[7] and report.findings[0].index == other


def _cli_verify(es_url: str, state: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    keys = write_key_pair(KEY, state / "verify-keys", force=True).public_key_path
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "otel_audit.cli",
            "verify",
            "--es-url",
            es_url,
            "--public-key",
            str(keys),
            "--checkpoint-dir",
            str(state / "checkpoints"),
            "--quiet",
            *args,
        ],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )


def test_newest_checkpoints_blocks_and_events_cut_off_is_stale(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    es = clean_es
    run(ingest(es_url, tmp_path, KEY, [40]))
    store = DirectoryCheckpointStore(tmp_path / "checkpoints")
    kept = store.latest("test-chain")
    assert kept is not None
    time.sleep(6)
    newer = run(ingest(es_url, tmp_path, KEY, [30], start=500))
    newest = store.latest("test-chain")
    assert newest is not None
    # The verifier's clock one second after the newest checkpoint: fresh.
    at = (newest.timestamp_ms + 1000) / 1000
    fresh = run_verify(es, tmp_path, [KEY], heartbeat_s=5.0, clock=lambda: at)
    assert fresh.ok and not fresh.stale, fresh.to_json_dict()
    # The attacker removes the newest blocks, their external checkpoints and events.
    cut = [b for b in _blocks(es) if b["_source"]["sequence"] > kept.sequence]
    assert cut
    for b in cut:
        es.delete(index=BLOCKS_INDEX, id=b["_id"])
        seq = b["_source"]["sequence"]
        (tmp_path / "checkpoints" / b["_source"]["chain_id"] / f"{seq:020d}.json").unlink()
    for eid in newer:
        index, _ = _where(es, eid)
        es.delete(index=index, id=eid)
    es.indices.refresh(index="audit-*")
    # Same clock, same options: only the age of what is left shows the cut.
    cut_off = run_verify(es, tmp_path, [KEY], heartbeat_s=5.0, clock=lambda: at)
    assert not cut_off.findings and list(cut_off.stale) == ["test-chain"]
    stale = _cli_verify(es_url, tmp_path, "--json", "--heartbeat-s", "5", "--grace-s", "0")
    out = json.loads(stale.stdout)
    assert stale.returncode == 4, out
    assert out["stale"] is True and out["summary"]["findings"] == {}
    assert list(out["stale_chains"]) == ["test-chain"]


def test_text_output_escapes_control_characters(sealed: Any, es_url: str) -> None:
    es, state, ids = sealed
    forged = "evil\x1b[2J\x1b[32mCLEAN\x07"
    _forge_event(es, ids, forged, "2200-01-01T00:00:00.000000000Z")
    text = _cli_verify(es_url, state, "--seal-deadline-s", "0")
    assert text.returncode == 1
    assert b"\x1b" not in text.stdout and b"\x07" not in text.stdout
    assert b"evil\\x1b[2J\\x1b[32mCLEAN\\x07" in text.stdout
    as_json = _cli_verify(es_url, state, "--seal-deadline-s", "0", "--json")
    assert json.loads(as_json.stdout)["findings"][0]["event_id"] == forged


def test_pure_core_is_what_verify_runs(sealed: Any) -> None:
    """The same inputs, read here without the verifier's I/O, give the same report."""
    es, state, ids = sealed
    index, doc = _where(es, ids[4])
    doc["message"] = "changed"
    es.index(index=index, id=ids[4], document=doc)
    es.delete(index=_where(es, ids[9])[0], id=ids[9])
    _forge_event(es, ids, "0190aaaa-0000-7000-8000-0000000000f4", "2200-01-01T00:00:00Z")
    via_es = run_verify(es, state, [KEY], seal_deadline_s=0.0)
    es.indices.refresh(index="audit-*")
    hits = es.search(index="audit-events-*", size=1000)["hits"]["hits"]
    blocks = [(b["_id"], b["_source"]) for b in _blocks(es)]
    store = DirectoryCheckpointStore(state / "checkpoints")

    def lookup(keys: Any) -> list[Any]:
        out: list[Any] = []
        for idx, eid in keys:
            got = es.options(ignore_status=404).get(index=idx, id=eid)
            out.append(leaf_hash_of_document(got["_source"]) if got.get("found") else None)
        return out

    now = int(time.time() * 1000)
    pure = classify(
        Inputs(
            block_docs=blocks,
            keyring=Keyring([KEY.public_key()]),
            external={c: list(store.read(c)) for c in store.chains()},
            pages=[hash_hits(hits)],
            lookup=lookup,
            alias=EVENTS_ALIAS,
            alias_indices=list(es.indices.get_alias(name=EVENTS_ALIAS).body),
            now_ms=now,
            scan_ms=now,
            seal_deadline_ms=0,
            stale_after_ms=0,
        )
    )
    assert kinds(via_es) == kinds(pure) == {"modified": 1, "missing": 1, "inserted": 1}
    key = sorted((str(f.kind), f.event_id) for f in via_es.findings)
    assert key == sorted((str(f.kind), f.event_id) for f in pure.findings)


def test_since_checks_only_what_was_added(sealed: Any, es_url: str) -> None:
    es, state, _ids = sealed
    saved = state / "verified-checkpoint.json"
    first = _cli_verify(es_url, state, "--save-checkpoint", str(saved))
    assert first.returncode == 0, first.stdout
    anchor = Checkpoint.from_json_dict(json.loads(saved.read_text()))
    assert anchor == run_verify(es, state, [KEY]).anchors["test-chain"]
    more = run(ingest(es_url, state, KEY, [40], start=3000))
    # The CLI reads what is searchable: make the new events and blocks so first.
    es.indices.refresh(index="audit-*")
    since = _cli_verify(es_url, state, "--since", str(saved), "--json")
    out = json.loads(since.stdout)
    assert since.returncode == 0, out
    assert out["summary"]["events_checked"] == len(more)
    report = run_verify(es, state, [KEY], since=anchor)
    assert report.ok, report.to_json_dict()
    assert report.events_checked == len(more)
    index, doc = _where(es, more[5])
    doc["message"] = "changed after the checkpoint"
    es.index(index=index, id=more[5], document=doc)
    tampered = run_verify(es, state, [KEY], since=anchor)
    assert kinds(tampered) == {"modified": 1} and tampered.findings[0].event_id == more[5]
    # A checkpoint of another history (same key, same size, other root) is not extended.
    forked = sign_checkpoint(dataclasses.replace(anchor, root_hash=bytes(32)), KEY)
    split = run_verify(es, state, [KEY], since=forked)
    assert "bad_signature" in kinds(split)


def test_prove_reads_only_the_block_that_sealed_the_event(sealed: Any) -> None:
    """An event's proof comes from its own block record (its frontier and leaves): with
    every earlier block record of the chain gone, the newest event still gets a bundle
    that verifies against the signed checkpoint."""
    es, _state, ids = sealed
    blocks = _blocks(es)
    for hit in blocks[:-1]:
        es.delete(index=BLOCKS_INDEX, id=hit["_id"], refresh=True)
    bundle = prove(es, ids[-1])
    assert bundle.leaf_index == len(ids) - 1
    assert verify_bundle(bundle, Keyring([KEY.public_key()])).ok


def test_prove_refuses_a_block_record_whose_hashes_were_edited(sealed: Any) -> None:
    """An administrator edits the unsigned frontier of the event's block record: prove
    must say the record does not lead to its signed root, not hand out a bundle that
    fails later."""
    es, _state, ids = sealed
    hit = _blocks(es)[-1]
    doc = hit["_source"]
    frontier = list(doc["frontier"])
    assert frontier, "the last block follows others: its frontier is not empty"
    edited = bytearray(base64.b64decode(frontier[0]))
    edited[0] ^= 1
    frontier[0] = base64.b64encode(bytes(edited)).decode()
    doc["frontier"] = frontier
    es.index(index=BLOCKS_INDEX, id=hit["_id"], document=doc, refresh=True)
    with pytest.raises(ProveError, match="signed root"):
        prove(es, ids[-1])
