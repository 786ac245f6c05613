"""The sealer fails closed: at start it adopts only block records it could have written.

An attacker with write access to Elasticsearch (not to the signing key) plants the next
block record of the chain, listing a forged event. Adopting it would write its checkpoint
to the external store and sign the next block on top of it, vouching for the forgery. The
sealer must refuse to start instead, naming the record.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch

from indexer.indices import BLOCKS_INDEX
from indexer.integrity.blocks import KIND_BLOCK, BlockRecord, merge_time_range
from otel_audit.emit import new_event_id
from otel_audit.integrity import (
    Ed25519PrivateKey,
    generate_private_key,
    key_id,
    leaf_hash_of_event,
    make_checkpoint,
    sign_checkpoint,
    write_key_pair,
)
from receiver.sealing.sealer import ChainRefused, Sealer
from receiver.sealing.state import ChainState
from tests.support.integrity_harness import ingest, integrity_config, run_verify

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
KEY = generate_private_key()


def forged_record(state: ChainState, signer: Ed25519PrivateKey) -> tuple[BlockRecord, str]:
    """The next record of ``state``'s chain, listing one forged event, signed by ``signer``."""
    event_id = new_event_id()
    doc = {"@timestamp": "2026-12-01T00:00:00.000000000Z", "event": {"id": event_id}}
    leaf = leaf_hash_of_event(doc)
    cr = state.compact_range()
    cr.extend([leaf])
    cp = sign_checkpoint(
        make_checkpoint(
            origin=state.chain_id,
            tree_size=cr.size,
            root_hash=cr.root(),
            sequence=state.sequence + 1,
            previous_hash=state.last_digest,
            timestamp_ms=state.last_timestamp_ms + 1,
        ),
        signer,
    )
    record = BlockRecord(
        kind=KIND_BLOCK,
        checkpoint=cp,
        first_leaf=state.tree_size,
        event_ids=(event_id,),
        event_indices=("audit-events-2026.12.01",),
        leaf_hashes=(leaf,),
        frontier=state.frontier,
        time_range=merge_time_range([doc["@timestamp"]]),
    )
    return record, event_id


def plant(es: Elasticsearch, record: BlockRecord, **overrides: Any) -> None:
    doc = record.to_document()
    doc.update(overrides)
    es.index(index=BLOCKS_INDEX, id=record.doc_id, document=doc, refresh=True)


def sealed_state(state_dir: Path) -> ChainState:
    return ChainState.from_json((state_dir / "state.json").read_bytes())


async def start_sealer(es_url: str, state_dir: Path) -> Sealer:
    es = AsyncElasticsearch(es_url, request_timeout=30, max_retries=0)
    sealer = Sealer(es, integrity_config(state_dir), private_key=KEY)
    try:
        await sealer.start()
    except BaseException:
        await es.close()
        raise
    return sealer


@pytest.mark.parametrize("signer", ["other key", "bad signature"])
def test_a_forged_next_block_at_restart_is_refused(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path, signer: str
) -> None:
    state_dir = tmp_path / "state"
    ids = asyncio.run(ingest(es_url, state_dir, KEY, [20]))
    state = sealed_state(state_dir)
    if signer == "other key":
        record, _ = forged_record(state, generate_private_key())
        plant(clean_es, record)
        why = "signed by key"
    else:  # names this receiver's key id, but the attacker signed it with another key
        record, _ = forged_record(state, generate_private_key())
        checkpoint = {**record.to_document()["checkpoint"], "key_id": key_id(KEY)}
        plant(clean_es, record, checkpoint=checkpoint, key_id=key_id(KEY))
        why = "signature does not verify"

    with pytest.raises(ChainRefused) as refused:
        asyncio.run(start_sealer(es_url, state_dir))
    message = str(refused.value)
    assert record.doc_id in message and BLOCKS_INDEX in message
    assert f"sequence {state.sequence + 1}" in message and why in message
    # Nothing was built on it: the local state and the checkpoint store did not move.
    assert sealed_state(state_dir) == state
    # Once the operator removes the planted record (docs/integrity.md), it starts again.
    clean_es.delete(index=BLOCKS_INDEX, id=record.doc_id, refresh=True)
    ids += asyncio.run(ingest(es_url, state_dir, KEY, [5], start=100))
    report = run_verify(clean_es, state_dir, [KEY], chain_id="test-chain")
    assert report.ok and report.events_checked == len(ids), report.to_json_dict()


def test_serve_refuses_to_start_over_a_forged_block(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    asyncio.run(ingest(es_url, state_dir, KEY, [10]))
    record, _ = forged_record(sealed_state(state_dir), generate_private_key())
    plant(clean_es, record)

    key_file = write_key_pair(KEY, tmp_path / "keys").private_key_path
    config = tmp_path / "receiver.yaml"
    config.write_text(
        "grpc_endpoint: 127.0.0.1:0\n"
        "http_endpoint: 127.0.0.1:0\n"
        "query_api_endpoint: 127.0.0.1:0\n"
        f"es_url: {es_url}\n"
        f"spool_dir: {tmp_path / 'spool'}\n"
        "spans_consumer: none\n"
        "integrity:\n"
        f"  key_file: {key_file}\n"
        f"  state_dir: {state_dir}\n"
        f"  checkpoint_dir: {state_dir / 'checkpoints'}\n"
        "  chain_id: test-chain\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_AUDIT_")}
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "otel_audit.cli", "serve", "--config", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr.decode()[-2000:]  # Exit.UNAVAILABLE
    log = [json.loads(x) for x in proc.stderr.decode().splitlines() if x.startswith("{")]
    log += [json.loads(x) for x in proc.stdout.decode().splitlines() if x.startswith("{")]
    text = json.dumps(log)
    assert record.doc_id in text and "refusing to resume the chain" in text
    assert "receiver listening" not in text
    assert time.monotonic() - began < 120


def test_newest_blocks_deleted_from_elasticsearch_refuse_the_start(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    asyncio.run(ingest(es_url, state_dir, KEY, [10]))
    before = sealed_state(state_dir)
    saved = tmp_path / "saved-state.json"
    saved.write_bytes((state_dir / "state.json").read_bytes())
    asyncio.run(ingest(es_url, state_dir, KEY, [10], start=50))
    # The attacker deletes the newest blocks; the local state is set back with them (a
    # restored disk). Only the checkpoint store, kept apart, still knows the newer ones.
    clean_es.indices.refresh(index=BLOCKS_INDEX)
    newer = clean_es.search(
        index=BLOCKS_INDEX, query={"range": {"sequence": {"gt": before.sequence}}}, size=100
    )["hits"]["hits"]
    assert newer
    for hit in newer:
        clean_es.delete(index=BLOCKS_INDEX, id=hit["_id"], refresh=True)
    (state_dir / "state.json").write_bytes(saved.read_bytes())

    with pytest.raises(RuntimeError, match="blocks were lost or deleted"):
        asyncio.run(start_sealer(es_url, state_dir))
    assert sealed_state(state_dir) == before
