"""The intent log: what a write was about to store is resolved against Elasticsearch.

Intent files left by an earlier run are resolved at start: a stored document whose leaf is
the intended one is sealed once, an intended event Elasticsearch never stored is dropped,
a stored document with another leaf is a conflict left to verify (never sealed), and an
event already journaled is not journaled again. While the receiver runs, generations
whose writes were all journaled are deleted, so the files stay bounded.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch

from indexer.indices import BLOCKS_INDEX
from indexer.integrity.blocks import BlockRecord
from otel_audit.emit import new_event_id
from otel_audit.integrity import generate_private_key, leaf_hash_of_event
from receiver.sealing.sealer import Sealer
from receiver.sealing.state import Entries, IntentLog, Journal, StateDir
from tests.receiver.conftest import audit_record
from tests.support.collector_build import free_port
from tests.support.integrity_harness import integrity_config, sealed_consumer

pytestmark = pytest.mark.integration

KEY = generate_private_key()
INDEX = "audit-events-intent-test"


def _doc(n: int) -> dict[str, Any]:
    return {
        "@timestamp": "2026-01-02T03:04:05.000Z",
        "event": {"action": "invoice.update", "id": new_event_id()},
        "n": n,
    }


def test_intents_left_by_a_crash_are_resolved_at_start(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    stored, missing, tampered, journaled = _doc(1), _doc(2), _doc(3), _doc(4)
    ids = {name: new_event_id() for name in ("stored", "missing", "tampered", "journaled")}
    clean_es.create(index=INDEX, id=ids["stored"], document=stored)
    clean_es.create(index=INDEX, id=ids["journaled"], document=journaled)
    # Someone with write access stored other content under an id this receiver intended.
    clean_es.create(index=INDEX, id=ids["tampered"], document={**tampered, "n": 666})
    clean_es.indices.refresh(index=INDEX)

    state = tmp_path / "state"
    state.mkdir()
    intent = IntentLog(StateDir(state).intent_path(0))
    docs = {"stored": stored, "missing": missing, "tampered": tampered, "journaled": journaled}
    intent.append(
        Entries(
            [INDEX] * 4,
            [ids[k] for k in docs],
            [leaf_hash_of_event(d) for d in docs.values()],
            [d["@timestamp"] for d in docs.values()],
        )
    )
    intent.close()
    # The journal already holds one of them: it must be sealed once, not twice.
    journal = Journal(StateDir(state).journal_path(0))
    journal.append(Entries([INDEX], [ids["journaled"]], [leaf_hash_of_event(journaled)], [""]))
    journal.close()

    async def scenario() -> dict[str, float]:
        es = AsyncElasticsearch(es_url, request_timeout=30, max_retries=0)
        sealer = Sealer(es, integrity_config(state), private_key=KEY)
        try:
            await sealer.start()
            await sealer.force_flush()
            return sealer.stats()
        finally:
            await sealer.shutdown(10)
            await es.close()

    stats = asyncio.run(scenario())
    assert (stats["intents_sealed"], stats["intents_dropped"], stats["intent_conflicts"]) == (
        1,
        1,
        1,
    )
    clean_es.indices.refresh(index=BLOCKS_INDEX)
    blocks = clean_es.search(index=BLOCKS_INDEX, query={"term": {"kind": "block"}}, size=100)
    sealed = [i for h in blocks["hits"]["hits"] for i in h["_source"]["event_ids"]]
    assert sorted(sealed) == sorted([ids["stored"], ids["journaled"]])
    records = [BlockRecord.from_document(h["_source"]) for h in blocks["hits"]["hits"]]
    leaves = {i: leaf for r in records for i, leaf in zip(r.event_ids, r.leaf_hashes, strict=True)}
    assert leaves[ids["stored"]] == leaf_hash_of_event(stored)
    assert not list(state.glob("intent-*.log")), "resolved intents are deleted"


def test_settled_intent_generations_are_deleted_while_running(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"

    async def scenario() -> tuple[list[int], dict[str, float]]:
        es = AsyncElasticsearch(es_url, request_timeout=30, max_retries=0)
        sealer, consumer = sealed_consumer(es, es_url, state, KEY, sweep_interval_s=0.1)
        await consumer.start()
        files: list[int] = []
        try:
            for round_ in range(5):
                await consumer.consume_logs([audit_record(round_ * 20 + i) for i in range(20)])
                await asyncio.sleep(0.3)
                files.append(len(list(state.glob("intent-*.log"))))
            await sealer.force_flush()
            return files, sealer.stats()
        finally:
            await consumer.shutdown(10)

    files, stats = asyncio.run(scenario())
    # Only the current generation is left after each sweep: the log does not grow.
    assert files == [1] * 5, files
    assert stats["events_sealed"] == 100
    assert stats["intents_sealed"] == 0 and stats["intents_dropped"] == 0
    assert not list(state.glob("intent-*.log")), "a clean shutdown leaves no intent"


def test_retried_failing_writes_do_not_grow_the_intent_log(tmp_path: Path) -> None:
    """Elasticsearch away: the spool's replay retries the same events again and again.
    Each retry leans on the intent lines already logged instead of appending new ones."""
    state = tmp_path / "state"
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    entries = Entries(
        [INDEX] * 50,
        [new_event_id() for _ in range(50)],
        [leaf_hash_of_event(_doc(i)) for i in range(50)],
        ["2026-01-02T03:04:05.000Z"] * 50,
    )

    async def scenario() -> list[int]:
        es = AsyncElasticsearch(down, request_timeout=2, max_retries=0)
        sealer = Sealer(es, integrity_config(state, sweep_interval_s=0.05), private_key=KEY)
        sizes = []
        try:
            await sealer.start()
            for _ in range(6):
                settle = await sealer.on_intent(entries)
                settle(False)  # the write found Elasticsearch unavailable
                await asyncio.sleep(0.2)  # sweeps rotate; resolving waits for Elasticsearch
                sizes.append(sum(p.stat().st_size for p in state.glob("intent-*.log")))
        finally:
            await sealer.shutdown(1)
            await es.close()
        return sizes

    sizes = asyncio.run(scenario())
    assert sizes[0] > 0
    assert set(sizes) == {sizes[0]}, sizes
    assert list(state.glob("intent-*.log")), "unresolved intents are kept for the next start"


def test_an_intent_file_goes_only_once_the_journal_naming_its_events_is_on_disk(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Journal appends are not fsynced one by one: after a power loss the intent files
    name what the lost journal tail held. So no intent file may be deleted while the
    journal still holds unsynced lines (events pending in no block yet, here)."""
    state = tmp_path / "state"
    seen: list[tuple[str, bool]] = []
    sealers: list[Sealer] = []
    unlink = Path.unlink

    def recording_unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name.startswith("intent-") and sealers:
            journal = sealers[0]._journal
            seen.append((self.name, bool(journal is not None and journal.unsynced)))
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", recording_unlink)

    async def scenario() -> int:
        es = AsyncElasticsearch(es_url, request_timeout=30, max_retries=0)
        sealer, consumer = sealed_consumer(
            es,
            es_url,
            state,
            KEY,
            sweep_interval_s=0.05,
            block_max_events=10_000,
            block_max_interval_ms=60_000,
        )
        sealers.append(sealer)
        await consumer.start()
        try:
            for round_ in range(4):
                await consumer.consume_logs([audit_record(round_ * 10 + i) for i in range(10)])
                await asyncio.sleep(0.2)
            return sealer.pending_count
        finally:
            await consumer.shutdown(10)

    pending = asyncio.run(scenario())
    assert pending == 40, "the events were to stay journaled, in no block, while intents go"
    deleted = [name for name, _ in seen]
    assert len(deleted) >= 3, seen
    assert not [name for name, unsynced in seen if unsynced], seen
