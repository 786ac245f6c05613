"""Worker-side hashing equals the checked canonical path, and both readers agree."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from elasticsearch import Elasticsearch

from indexer.integrity.leaf_scan import LeafScan, hash_hits
from otel_audit.integrity import leaf_hash_of_document

DOCS: list[Any] = [
    {"b": 1, "a": "x", "event": {"ingested": "2025-01-02T03:04:05.123456789Z"}},
    {"n": 1.0, "m": -0.0, "s": "1.4.2"},
    {"big": 1e20, "small": 1.5e-6, "ok": 2.5},
    {"edge": 9007199254740991, "neg": -9007199254740991, "list": [1, 2.25, "3.0"]},
    {"k\ue000": 1, "k\U0001f600": 2, "t": "caf\u00e9"},
    {"integrity": {"leaf": "x"}, "z": [True, False, None], "nested": {"y": {"x": 0.1}}},
    {"text": "a:1.5,b:[2e3]", "event": "not an object"},
]


def test_hashes_equal_the_checked_path() -> None:
    hits = [
        {"_id": f"id-{i}", "_index": "audit-events-x", "_source": orjson.loads(orjson.dumps(d))}
        for i, d in enumerate(DOCS)
    ]
    ids, indices, hashes = hash_hits(hits)
    assert ids == [f"id-{i}" for i in range(len(DOCS))]
    assert indices == ["audit-events-x"] * len(DOCS)
    assert hashes == [leaf_hash_of_document(h["_source"]) for h in hits]


def test_unhashable_event_reports_why() -> None:
    hits = [{"_id": "a", "_index": "i", "_source": {"n": 2**60}}]
    _, _, hashes = hash_hits(hits)
    assert isinstance(hashes[0], str) and "2**53" in hashes[0]


@pytest.mark.integration
def test_processes_and_threads_read_the_same(clean_es: Elasticsearch) -> None:
    index = "leaf-scan-test"
    # Unmapped: the documents only need to come back as stored.
    clean_es.options(ignore_status=404).indices.delete(index=index)
    clean_es.indices.create(index=index, mappings={"dynamic": False})
    for i, doc in enumerate(DOCS * 30):
        clean_es.index(index=index, id=str(i), document=doc)
    clean_es.indices.refresh(index=index)
    results = []
    for processes in (True, False):
        with LeafScan(clean_es, index, {"match_all": {}}, 50, 3, processes=processes) as scan:
            got = {
                eid: h
                for ids, _, hashes in scan.pages()
                for eid, h in zip(ids, hashes, strict=True)
            }
        results.append(got)
    assert len(results[0]) == len(DOCS) * 30
    assert results[0] == results[1]
    assert results[0]["1"] == leaf_hash_of_document(DOCS[1])
    clean_es.indices.delete(index=index)
