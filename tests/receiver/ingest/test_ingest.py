"""The ingest consumer against the real Elasticsearch: partial rejection, dead letters,
exactly-once, conflicts, mapping errors, coalescing and the sealer hook."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch

from indexer.indices import EVENTS_ALIAS, REJECTED_ALIAS
from otel_audit.integrity import leaf_hash_of_document
from otel_audit.record import LogRecordData
from receiver.ingest.consumer import IngestConsumer, build_consumer
from receiver.pipeline import IngestResult
from receiver.sealing.state import Entries
from tests.receiver.conftest import ConsumerFactory, RecordFactory

pytestmark = pytest.mark.integration


class CountingES:
    """Passes everything through and remembers the size of every ``_bulk``."""

    def __init__(self, es: AsyncElasticsearch) -> None:
        self._es = es
        self.bulk_sizes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._es, name)

    async def bulk(self, *, operations: bytes, **kw: Any) -> Any:
        self.bulk_sizes.append(operations.count(b"\n") // 2)
        return await self._es.bulk(operations=operations, **kw)


class CorruptingES(CountingES):
    """Adds a field the strict events mapping does not know to one document."""

    def __init__(self, es: AsyncElasticsearch, event_id: str) -> None:
        super().__init__(es)
        self.event_id = event_id.encode()

    async def bulk(self, *, operations: bytes, **kw: Any) -> Any:
        lines = operations.split(b"\n")
        for i, line in enumerate(lines):
            if b'"create"' in line and self.event_id in line:
                lines[i + 1] = lines[i + 1].replace(b'"audit":{', b'"audit":{"bogus":1,', 1)
        return await super().bulk(operations=b"\n".join(lines), **kw)


def _run(consumer: IngestConsumer, *calls: Any) -> list[Any]:
    async def go() -> list[Any]:
        await consumer.start()
        try:
            return [await c(consumer) for c in calls]
        finally:
            await consumer.shutdown(10)

    return asyncio.run(go())


def _consume(records: list[LogRecordData]) -> Any:
    return lambda c: c.consume_logs(records)


def _docs(es: Elasticsearch, index: str, **query: Any) -> list[dict[str, Any]]:
    es.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
    q = {"term": query} if query else {"match_all": {}}
    hits = es.search(index=index, query=q, size=1000, ignore_unavailable=True)["hits"]["hits"]
    return [h["_source"] | {"_id": h["_id"]} for h in hits]


def test_mixed_batch_counts_messages_and_dead_letters(
    clean_es: Elasticsearch, make_consumer: ConsumerFactory, make_record: RecordFactory
) -> None:
    records = [make_record(i) for i in range(5)]
    records[1].attributes["audit.outcome"] = "ok"
    del records[3].attributes["audit.action"]

    (result,) = _run(make_consumer(), _consume(records))

    assert result.accepted == 3 and result.rejected == 2
    assert result.error_message.startswith("2 of 5 records rejected: record 1: audit.outcome: ")
    assert "'ok' is not one of success, failure, denied, unknown" in result.error_message
    assert (
        "record 3: audit.action: record has no audit.action attribute: it is not an audit event"
        in result.error_message
    )
    stored = _docs(clean_es, EVENTS_ALIAS)
    assert sorted(d["event"]["id"] for d in stored) == sorted(
        records[i].attributes["audit.event.id"] for i in (0, 2, 4)
    )
    dead = {
        d["original"]["attributes"]["audit.resource.id"]: d for d in _docs(clean_es, REJECTED_ALIAS)
    }
    assert set(dead) == {"inv-1", "inv-3"}
    assert dead["inv-1"]["kind"] == "validation"
    assert dead["inv-1"]["reasons"] == [
        {
            "field": "audit.outcome",
            "rule": "enum",
            "message": "'ok' is not one of success, failure, denied, unknown",
        }
    ]
    assert dead["inv-1"]["event"] == {
        "action": "invoice.update",
        "id": records[1].attributes["audit.event.id"],
    }
    assert dead["inv-1"]["service"] == {"name": "billing"}
    assert dead["inv-3"]["reasons"][0]["rule"] == "not_audit_event"
    assert "action" not in dead["inv-3"]["event"]
    # The original record is kept in full, as sent.
    assert dead["inv-3"]["original"]["body"] == "invoice inv-3 updated"
    assert dead["inv-3"]["original"]["trace_id"] == records[3].trace_id
    # Only the typed fields are searchable; the original is never mapped.
    assert (
        _docs(clean_es, REJECTED_ALIAS, **{"reasons.rule": "enum"})[0]["_id"]
        == (dead["inv-1"]["_id"])
    )


def test_same_batch_twice_is_stored_once(
    clean_es: Elasticsearch, make_consumer: ConsumerFactory, make_record: RecordFactory
) -> None:
    records = [make_record(i) for i in range(4)]
    records.append(make_record(9, **{"audit.event.id": None}))  # id derived from content
    bad = make_record(7, **{"audit.category": "nope"})
    first, second = _run(make_consumer(), _consume([*records, bad]), _consume([*records, bad]))
    assert (
        first == second == IngestResult(accepted=5, rejected=1, error_message=first.error_message)
    )
    assert len(_docs(clean_es, EVENTS_ALIAS)) == 5
    assert len(_docs(clean_es, REJECTED_ALIAS)) == 1


def test_same_event_id_with_other_content_is_a_conflict(
    clean_es: Elasticsearch, make_consumer: ConsumerFactory, make_record: RecordFactory
) -> None:
    original = make_record(1)
    impostor = dataclasses.replace(
        original, attributes={**original.attributes, "audit.outcome": "failure"}
    )
    first, second = _run(make_consumer(), _consume([original]), _consume([impostor]))
    assert first.rejected == 0
    event_id = original.attributes["audit.event.id"]
    assert second.rejected == 1 and second.accepted == 0
    assert f"record 0: audit.event.id: event id {event_id} is already stored" in (
        second.error_message
    )
    (stored,) = _docs(clean_es, EVENTS_ALIAS)
    assert stored["event"]["outcome"] == "success", "a conflict must never overwrite"
    (dead,) = _docs(clean_es, REJECTED_ALIAS)
    assert dead["kind"] == "conflict"
    assert dead["event"]["id"] == event_id
    assert dead["stored_content_hash"] == stored["audit"]["content_hash"]
    assert dead["content_hash"] != dead["stored_content_hash"]
    assert dead["original"]["attributes"]["audit.outcome"] == "failure"


def test_mapping_error_is_rejected_and_dead_lettered(
    clean_es: Elasticsearch,
    es_url: str,
    make_consumer: ConsumerFactory,
    make_record: RecordFactory,
) -> None:
    records = [make_record(i) for i in range(3)]
    victim = records[1].attributes["audit.event.id"]
    client = CorruptingES(AsyncElasticsearch(es_url, max_retries=0), victim)
    (result,) = _run(make_consumer(client), _consume(records))
    assert result.accepted == 2 and result.rejected == 1
    assert "record 1: document: HTTP 400 strict_dynamic_mapping_exception" in result.error_message
    assert len(_docs(clean_es, EVENTS_ALIAS)) == 2
    (dead,) = _docs(clean_es, REJECTED_ALIAS)
    assert dead["kind"] == "mapping"
    assert dead["event"]["id"] == victim
    assert dead["reasons"][0]["rule"] == "mapping"
    assert dead["document"]["event"]["id"] == victim
    assert dead["original"]["attributes"]["audit.event.id"] == victim


def test_decode_rejections_are_dead_lettered(
    clean_es: Elasticsearch, make_consumer: ConsumerFactory, make_record: RecordFactory
) -> None:
    broken = make_record(5)
    broken.trace_id = "zz"
    _run(make_consumer(), lambda c: c.reject_records([broken], ["trace_id: not 16 bytes of hex"]))
    (dead,) = _docs(clean_es, REJECTED_ALIAS)
    assert dead["kind"] == "decode"
    assert dead["reasons"] == [
        {"field": "record", "rule": "decode", "message": "trace_id: not 16 bytes of hex"}
    ]
    assert dead["original"]["trace_id"] == "zz"


def test_concurrent_requests_share_bulks_and_reach_the_sealer(
    clean_es: Elasticsearch,
    es_url: str,
    make_consumer: ConsumerFactory,
    make_record: RecordFactory,
) -> None:
    sealed: list[tuple[str, str, bytes, str, bool]] = []

    class Sealer:
        async def on_durable(self, stored: Entries, created: Sequence[bool]) -> None:
            sealed.extend(
                zip(
                    stored.index_names,
                    stored.event_ids,
                    stored.leaf_hashes,
                    stored.timestamps,
                    created,
                    strict=True,
                )
            )

    client = CountingES(AsyncElasticsearch(es_url, max_retries=0))
    consumer = make_consumer(client, sealer=Sealer(), bulk_flush_interval_ms=20.0)
    batches = [[make_record(10 * r + i) for i in range(10)] for r in range(30)]

    async def all_at_once(c: IngestConsumer) -> list[IngestResult]:
        return await asyncio.gather(*(c.consume_logs(b) for b in batches))

    (results,) = _run(consumer, all_at_once)
    assert all(r.accepted == 10 and r.rejected == 0 for r in results)
    assert sum(client.bulk_sizes) == 300
    assert len(client.bulk_sizes) <= 10, client.bulk_sizes
    stored = {d.pop("_id"): d for d in _docs(clean_es, EVENTS_ALIAS)}
    assert len(stored) == 300
    assert sorted(event_id for _, event_id, *_ in sealed) == sorted(
        r.attributes["audit.event.id"] for b in batches for r in b
    )
    # The sealer gets what the write path computed from each document, not the document:
    # the leaf hash and @timestamp of exactly what Elasticsearch stored.
    for index_name, event_id, leaf, timestamp, created in sealed:
        doc = stored[event_id]
        assert index_name.startswith("audit-events-") and created
        assert leaf == leaf_hash_of_document(doc)
        assert timestamp == doc["@timestamp"]


def test_build_consumer_reads_the_receiver_config(tmp_path: Any, es_url: str) -> None:
    from receiver.config import load_config

    config = load_config(
        env={},
        overrides={
            "es_url": es_url,
            "spool_dir": str(tmp_path / "sp"),
            "bulk_max_docs": 77,
            "bulk_flush_interval_ms": 3,
        },
    )
    consumer = build_consumer(config)
    assert consumer.settings.bulk_max_docs == 77
    assert consumer.settings.bulk_flush_interval_ms == 3
    assert consumer.settings.spool_dir == str(tmp_path / "sp")
    assert not consumer.ready()
    _run(consumer, lambda c: asyncio.sleep(0, result=c.ready()))
