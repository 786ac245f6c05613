"""The bulk writer against the real Elasticsearch, with faults injected by small wrappers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch

from indexer.bulk import BulkItem, BulkSettings, BulkWriter, ItemResult, ItemStatus
from indexer.indices import EVENTS_ALIAS, event_index
from indexer.templates import install_templates
from otel_audit.document import build_document, content_hash
from otel_audit.emit import new_event_id
from otel_audit.record import LogRecordData

pytestmark = pytest.mark.integration


def _item(n: int, *, outcome: str = "success", event_id: str | None = None) -> BulkItem:
    record = LogRecordData(
        attributes={
            "audit.action": "user.login",
            "audit.category": "authentication",
            "audit.outcome": outcome,
            "audit.actor.id": f"u-{n}",
            "audit.actor.type": "user",
            "audit.event.id": event_id or new_event_id(),
        },
        resource={"service.name": "auth"},
        time_unix_nano=time.time_ns(),
    )
    sha = content_hash(record)
    doc = build_document(record, received_ns=time.time_ns(), content_sha256=sha)
    return BulkItem(event_index(record.time_unix_nano), doc["event"]["id"], doc, sha, record)


class _Answer:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body


class ThrottlingES:
    """Answers 429 for the chosen documents the first ``times`` times they are sent."""

    def __init__(self, es: AsyncElasticsearch, throttled: set[str], times: int) -> None:
        self._es = es
        self.throttled = {t.encode() for t in throttled}
        self.times = times
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._es, name)

    async def bulk(self, *, operations: bytes, **kw: Any) -> Any:
        self.calls += 1
        lines = operations.splitlines(keepends=True)
        pairs = [lines[i : i + 2] for i in range(0, len(lines), 2)]
        refuse = [
            self.calls <= self.times and any(t in p[0] for t in self.throttled) for p in pairs
        ]
        sent = b"".join(b"".join(p) for p, r in zip(pairs, refuse, strict=True) if not r)
        real = (await self._es.bulk(operations=sent, **kw)).body["items"] if sent else []
        answers = iter(real)
        items = [
            {"create": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}}
            if r
            else next(answers)
            for r in refuse
        ]
        return _Answer({"errors": True, "items": items})


def _write(
    es_url: str,
    items: list[BulkItem],
    wrap: Callable[[AsyncElasticsearch], Any] = lambda e: e,
    **settings: Any,
) -> tuple[list[ItemResult], Any]:
    async def go() -> tuple[list[ItemResult], Any]:
        client = wrap(AsyncElasticsearch(es_url, max_retries=0, retry_on_timeout=False))
        try:
            writer = BulkWriter(client, BulkSettings(**settings))
            return await writer.write(items), client
        finally:
            await client.close()

    return asyncio.run(go())


@pytest.fixture
def templated(clean_es: Elasticsearch) -> Elasticsearch:
    install_templates(clean_es)
    return clean_es


def _count(es: Elasticsearch) -> int:
    es.indices.refresh(index=EVENTS_ALIAS)
    return int(es.count(index=EVENTS_ALIAS)["count"])


def test_created_duplicate_conflict_and_mapping(templated: Elasticsearch, es_url: str) -> None:
    items = [_item(i) for i in range(3)]
    first, _ = _write(es_url, items)
    assert [r.status for r in first] == [ItemStatus.CREATED] * 3

    impostor = _item(9, outcome="failure", event_id=items[1].doc_id)
    broken = _item(4)
    broken.document["no_such_field"] = 1
    again, _ = _write(es_url, [items[0], impostor, broken, items[2]])
    assert [r.status for r in again] == [
        ItemStatus.DUPLICATE,
        ItemStatus.CONFLICT,
        ItemStatus.MAPPING,
        ItemStatus.DUPLICATE,
    ]
    assert again[1].stored_hash == items[1].content_hash
    assert impostor.content_hash is not None and impostor.content_hash in again[1].detail
    assert "strict_dynamic_mapping_exception" in again[2].detail
    assert _count(templated) == 3


def test_items_without_hash_treat_409_as_stored(templated: Elasticsearch, es_url: str) -> None:
    item = BulkItem("audit-rejected-2020.01.01", "dl-1", {"kind": "validation"})
    assert [r.status for r in _write(es_url, [item])[0]] == [ItemStatus.CREATED]
    assert [r.status for r in _write(es_url, [item])[0]] == [ItemStatus.DUPLICATE]


def test_throttled_items_are_retried_until_stored(templated: Elasticsearch, es_url: str) -> None:
    items = [_item(i) for i in range(5)]
    throttled = {items[1].doc_id, items[3].doc_id}
    results, client = _write(
        es_url, items, lambda e: ThrottlingES(e, throttled, times=2), backoff_initial_s=0.01
    )
    assert [r.status for r in results] == [ItemStatus.CREATED] * 5
    assert client.calls == 3
    assert _count(templated) == 5


def test_throttling_that_does_not_stop_reports_unavailable(
    templated: Elasticsearch, es_url: str
) -> None:
    items = [_item(i) for i in range(3)]
    results, client = _write(
        es_url,
        items,
        lambda e: ThrottlingES(e, {items[0].doc_id}, times=99),
        max_attempts=3,
        backoff_initial_s=0.01,
    )
    assert [r.status for r in results] == [
        ItemStatus.UNAVAILABLE,
        ItemStatus.CREATED,
        ItemStatus.CREATED,
    ]
    assert "after 3 attempts" in results[0].detail and "429" in results[0].detail
    assert client.calls == 3


def test_large_writes_are_split_by_docs_and_bytes(templated: Elasticsearch, es_url: str) -> None:
    items = [_item(i) for i in range(25)]
    seen: list[int] = []

    def count(es: AsyncElasticsearch) -> Any:
        original: Callable[..., Awaitable[Any]] = es.bulk

        async def bulk(*, operations: bytes, **kw: Any) -> Any:
            seen.append(operations.count(b"\n") // 2)
            return await original(operations=operations, **kw)

        es.bulk = bulk  # type: ignore[method-assign]
        return es

    results, _ = _write(es_url, items, count, max_docs=10)
    assert seen == [10, 10, 5]
    assert all(r.status is ItemStatus.CREATED for r in results)
    one = len(items[0].encoded())
    seen.clear()
    _write(es_url, [_item(i) for i in range(6)], count, max_bytes=one * 2 + 10)
    assert seen == [2, 2, 2]


def test_unreachable_elasticsearch_reports_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results, _ = _write(f"http://127.0.0.1:{port}", [_item(0), _item(1)])
    assert [r.status for r in results] == [ItemStatus.UNAVAILABLE] * 2
    assert "unreachable" in results[0].detail
