"""Finding a block by event id through its few ``id_keys`` rather than every id.

A block record lists thousands of event ids; indexing each as a term made a record cost
Elasticsearch several microseconds of CPU per sealed event. Records carry the ids
unindexed and a few lookup keys (:func:`id_key`): the keys find candidates, the ids
decide. An attacker who edits the keys to hide a block from ``prove`` and from the
sealer's duplicate check is reported by verify; records written before the keys existed
are still found, and an index an earlier release created is given the new field.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch

from indexer.indices import BLOCKS_INDEX
from indexer.integrity.blocks import (
    BlockRecord,
    blocks_template,
    find_holding,
    id_key,
    id_keys,
)
from indexer.integrity.prove import prove
from indexer.mappings import TemplateSettings
from otel_audit.emit import event_id_at
from otel_audit.integrity import CheckpointFormatError, generate_private_key
from otel_audit.schema import load_schema
from receiver.sealing.state import ChainState
from tests.receiver.sealing.test_fail_closed import forged_record
from tests.support.integrity_harness import ingest, run_verify

KEY = generate_private_key()


def test_uuid7_ids_minted_together_share_a_key_and_other_ids_are_their_own() -> None:
    a, b = event_id_at(1_767_225_600_000, 1), event_id_at(1_767_225_600_100, 2)
    later = event_id_at(1_767_225_601_000, 3)
    assert id_key(a) == id_key(b) != id_key(later)
    v4 = "0b5cf7f2-4a0e-4f0e-9d5a-3b1f3c2d1e0f"
    assert id_key(v4) == v4 and id_key("not-a-uuid") == "not-a-uuid"
    assert id_keys([later, a, b, a]) == sorted({id_key(a), id_key(later)})


def test_a_record_whose_keys_disagree_with_its_ids_does_not_parse() -> None:
    doc = _any_record_doc()
    BlockRecord.from_document(doc)
    doc["id_keys"] = [id_key(event_id_at(1_767_225_600_000, 1))]
    with pytest.raises(CheckpointFormatError, match="id_keys do not match event_ids"):
        BlockRecord.from_document(doc)


def _any_record_doc() -> dict[str, Any]:
    record, _ = forged_record(ChainState("unit-chain"), KEY)
    return record.to_document()


@pytest.mark.integration
def test_hiding_a_block_from_lookups_by_its_keys_is_reported_by_verify(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    ids = asyncio.run(ingest(es_url, tmp_path, KEY, [30]))
    clean_es.indices.refresh(index=BLOCKS_INDEX)
    assert prove(clean_es, ids[0]).leaf_index == 0
    hit = clean_es.search(index=BLOCKS_INDEX, query={"term": {"kind": "block"}}, size=1)
    block = hit["hits"]["hits"][0]
    doc = dict(block["_source"])
    doc["id_keys"] = ["t0"]  # the ids' own keys removed: prove no longer finds the block
    clean_es.index(index=BLOCKS_INDEX, id=block["_id"], document=doc, refresh=True)
    hidden = [e for e in ids if e in doc["event_ids"]]
    assert hidden
    assert not asyncio.run(_found(es_url, hidden))
    report = run_verify(clean_es, tmp_path, [KEY])
    assert not report.ok
    assert any("id_keys" in f.message for f in report.findings), [
        (f.kind, f.message) for f in report.findings
    ]


async def _found(es_url: str, ids: list[str]) -> set[str]:
    async with AsyncElasticsearch(es_url) as es:
        found: set[str] = set()
        async for hit in find_holding(es, ids):
            found |= set(hit["_source"]["event_ids"]) & set(ids)
        return found


@pytest.mark.integration
def test_an_index_of_an_earlier_release_is_upgraded_and_its_records_still_found(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    template = blocks_template(load_schema(), TemplateSettings())["template"]
    mappings = copy.deepcopy(template["mappings"])
    del mappings["properties"]["id_keys"]
    mappings["properties"]["event_ids"] = {"type": "keyword", "doc_values": False}
    clean_es.indices.create(index=BLOCKS_INDEX, mappings=mappings)
    old = _any_record_doc()
    del old["id_keys"]
    clean_es.index(index=BLOCKS_INDEX, id="unit-chain:old", document=old, refresh=True)

    ids = asyncio.run(ingest(es_url, tmp_path, KEY, [20]))
    clean_es.indices.refresh(index=BLOCKS_INDEX)

    mapping = clean_es.indices.get_mapping(index=BLOCKS_INDEX)[BLOCKS_INDEX]["mappings"]
    assert "id_keys" in mapping["properties"]
    assert asyncio.run(_found(es_url, ids)) == set(ids)
    assert asyncio.run(_found(es_url, list(old["event_ids"]))) == set(old["event_ids"])
