"""The span store: compact documents, idempotent retries, its template and retention."""

from __future__ import annotations

import asyncio
import time

import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch

from indexer.indices import span_index
from indexer.spans import SpansConfig, build_span_document
from indexer.templates import registered_templates
from otel_audit.span_record import SpanData
from receiver.errors import Unavailable
from receiver.spans import SpansConsumer

TRACE = "0af7651916cd43dd8448eb211c80319c"


def _span(n: int, parent: str = "", **kw: object) -> SpanData:
    start = kw.pop("start", time.time_ns() - 5_000_000)
    assert isinstance(start, int)
    base = {
        "trace_id": TRACE,
        "span_id": f"{n:016x}",
        "parent_span_id": parent,
        "name": f"op {n}",
        "kind": 2,
        "start_time_unix_nano": start,
        "end_time_unix_nano": start + 1_500_000,
        "status_code": 2,
        "status_message": "boom",
        "attributes": {
            "http.method": "POST",
            "http.route": "/orders/{id}",
            "http.response.status_code": 503,
            "rpc.system": "grpc",
            "db.system": "postgresql",
            "customer.tier": "gold",
            "payload": b"\x00\x01",
        },
        "resource": {"service.name": "orders", "service.version": "2.1", "host.name": "h1"},
        "scope_name": "shop",
    }
    base.update(kw)
    return SpanData(**base)  # type: ignore[arg-type]


def test_document_is_compact_and_uses_the_known_fields() -> None:
    span = _span(1, parent="00000000000000aa")
    doc = build_span_document(span)
    assert doc["trace"] == {"id": TRACE}
    assert doc["span"]["id"] == "0000000000000001" and doc["parent"] == {"id": "00000000000000aa"}
    assert doc["span"]["kind"] == "server"
    assert doc["span"]["status"] == {"code": "error", "message": "boom"}
    assert doc["event"]["duration"] == 1_500_000
    assert doc["service"] == {"name": "orders", "version": "2.1"}
    assert doc["http"] == {
        "request": {"method": "POST"},
        "route": "/orders/{id}",
        "response": {"status_code": 503},
    }
    assert doc["rpc"] == {"system": "grpc"} and doc["db"] == {"system": "postgresql"}
    assert doc["span"]["attributes"] == {"customer.tier": "gold", "payload": "0001"}
    # An end before the start (clock trouble) is not a negative duration.
    odd = build_span_document(_span(2, end_time_unix_nano=1))
    assert odd["event"]["duration"] == 0


def test_many_attributes_are_bounded() -> None:
    attrs = {f"k{i}": "v" * 1000 for i in range(100)}
    doc = build_span_document(_span(3, attributes=attrs))
    kept = doc["span"]["attributes"]
    assert len(kept) == 32 and all(len(v) <= 256 for v in kept.values())


def test_template_records_retention() -> None:
    templates = registered_templates()
    spans = templates["otel-audit-spans"]
    assert spans["index_patterns"] == ["audit-spans-*"]
    assert spans["template"]["mappings"]["_meta"]["retention_days"] == SpansConfig().retention_days
    with pytest.raises(ValueError, match="retention_days"):
        SpansConfig(retention_days=0)


@pytest.mark.integration
def test_store_is_idempotent_and_daily(clean_es: Elasticsearch, es_url: str) -> None:
    day = 86_400 * 1_000_000_000
    t0 = (time.time_ns() // day) * day - 2 * day + 1000
    spans = [
        _span(1, start=t0),
        _span(2, parent=f"{1:016x}", start=t0 + day),
        _span(3, trace_id=""),
    ]

    async def scenario() -> tuple[int, int, int]:
        es = AsyncElasticsearch(es_url)
        consumer = SpansConsumer(es, SpansConfig(retention_days=2), close_client=True)
        await consumer.start()
        first = await consumer.consume_spans(spans)
        again = await consumer.consume_spans(spans)  # an exporter retry
        await consumer.shutdown()
        await consumer.shutdown()
        return first, again, consumer.failed

    first, again, failed = asyncio.run(scenario())
    assert (first, again, failed) == (2, 2, 0)
    clean_es.indices.refresh(index="audit-spans")
    assert clean_es.count(index="audit-spans")["count"] == 2
    indices = set(clean_es.indices.get(index="audit-spans-*"))
    assert indices == {span_index(t0), span_index(t0 + day)}
    meta = clean_es.indices.get_mapping(index="audit-spans-*")
    assert {m["mappings"]["_meta"]["retention_days"] for m in meta.values()} == {2}


def test_unreachable_store_asks_for_a_retry() -> None:
    async def scenario() -> None:
        es = AsyncElasticsearch("http://127.0.0.1:9", max_retries=0, request_timeout=2)
        consumer = SpansConsumer(es, close_client=True)
        try:
            with pytest.raises(Unavailable):
                await consumer.consume_spans([_span(1)])
        finally:
            await consumer.shutdown()

    asyncio.run(scenario())
