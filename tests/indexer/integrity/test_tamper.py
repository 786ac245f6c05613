"""Tampering done directly in Elasticsearch is detected and classified."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from indexer.indices import BLOCKS_INDEX
from indexer.integrity.blocks import BlockRecord
from indexer.integrity.prove import prove
from otel_audit.integrity import (
    Keyring,
    generate_private_key,
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
    assert set(counts) <= {"unknown_key", "bad_signature"}


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
    assert set(kinds(only_new)) == {"unknown_key"}
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
