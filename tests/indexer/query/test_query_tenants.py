"""Tenant-scoped tokens against the real Elasticsearch: attacks on every read route.

A token limited to tenant ``acme`` tries to read ``globex``: by search, by asking for
the other tenant outright, by event id, through a trace view, through stats, through an
export and by replaying a cursor. None of it may show a ``globex`` event, span or count.
Refused requests are recorded and, past the per-address limit, answered 429; the read
limits (leading wildcards, running queries, open cursors) answer clear 4xx errors.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from elasticsearch import Elasticsearch

from indexer.indices import span_index
from indexer.query.auth import hash_token
from indexer.query.config import TokenEntry
from indexer.spans import build_span_document
from otel_audit.span_record import SpanData
from tests.indexer.query.query_harness import Api, index_records, prepare, record

pytestmark = pytest.mark.integration

ACME_TRACE = "a" * 32
GLOBEX_TRACE = "b" * 32
SHARED_TRACE = "c" * 32
TOKENS = {"acme": "acme-reader-token-0123456789", "globex": "globex-reader-token-0123456789"}
SCOPED = (
    TokenEntry(subject="acme-ops", sha256=hash_token(TOKENS["acme"]), tenants=("acme",)),
    TokenEntry(subject="globex-ops", sha256=hash_token(TOKENS["globex"]), tenants=("globex",)),
)


def _dataset(es: Elasticsearch) -> dict[str, list[dict[str, Any]]]:
    prepare(es)
    base = time.time_ns() - 1800 * 1_000_000_000
    out: dict[str, list[dict[str, Any]]] = {"acme": [], "globex": [], "none": []}
    recs = []
    for i in range(24):
        tenant = ("acme", "globex", "none")[i % 3]
        trace = {0: ACME_TRACE, 1: GLOBEX_TRACE, 3: SHARED_TRACE, 4: SHARED_TRACE}.get(i, "")
        extra = {} if tenant == "none" else {"audit__tenant__id": tenant}
        recs.append(
            record(
                i,
                ts_ns=base + i * 1_000_000_000,
                action=("invoice.update", "user.login")[i % 2],
                trace_id=trace,
                span_id="00f067aa0ba902b7" if trace else "",
                **extra,
            )
        )
    docs = index_records(es, recs, refresh=False)
    for doc in docs:
        out[doc.get("organization", {}).get("id", "none")].append(doc)
    for trace_id in (ACME_TRACE, GLOBEX_TRACE, SHARED_TRACE):
        span = SpanData(
            trace_id=trace_id,
            span_id="00f067aa0ba902b7",
            name=f"span of {trace_id[:4]}",
            start_time_unix_nano=base,
            end_time_unix_nano=base + 1000,
            resource={"service.name": "billing"},
        )
        es.index(
            index=span_index(base),
            id=f"{trace_id}-00f067aa0ba902b7",
            document=build_span_document(span),
        )
    es.indices.refresh(index="audit-*")
    return out


def _ids(docs: list[dict[str, Any]]) -> set[str]:
    return {d["event"]["id"] for d in docs}


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_scoped_token_reads_nothing_of_another_tenant(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    data = _dataset(clean_es)
    acme = TOKENS["acme"]

    async def scenario() -> None:
        async with Api(es_url, tmp_path, extra_tokens=SCOPED, audit_queries=False) as api:
            # A plain search: only acme's events (none of globex, none without a tenant).
            status, page, _ = await api.get("/events", token=acme, params={"limit": "100"})
            assert status == 200
            assert {e["event"]["id"] for e in page["events"]} == _ids(data["acme"])
            # Asking for the other tenant outright, alone or beside its own.
            status, page, _ = await api.get("/events", token=acme, params={"tenant": "globex"})
            assert status == 200 and page["events"] == [] and page["next_cursor"] is None
            status, page, _ = await api.get(
                "/events",
                token=acme,
                params=[("tenant", "globex"), ("tenant", "acme"), ("limit", "100")],
            )
            assert {e["event"]["id"] for e in page["events"]} == _ids(data["acme"])
            # By id: another tenant's event and an event without tenant are not found.
            for other in (data["globex"][0], data["none"][0]):
                status, body, _ = await api.get(f"/events/{other['event']['id']}", token=acme)
                assert status == 404, body
            status, body, _ = await api.get(f"/events/{data['acme'][0]['event']['id']}", token=acme)
            assert status == 200 and body["event"]["organization"]["id"] == "acme"
            # Trace views: globex's trace shows nothing (not even its spans).
            status, body, _ = await api.get(f"/traces/{GLOBEX_TRACE}", token=acme)
            assert status == 404 and "span of" not in orjson.dumps(body).decode()
            status, view, _ = await api.get(f"/traces/{SHARED_TRACE}", token=acme)
            assert status == 200 and view["event_count"] == 1
            assert "globex" not in orjson.dumps(view).decode()
            status, view, _ = await api.get(f"/traces/{ACME_TRACE}", token=acme)
            assert status == 200 and view["event_count"] == 1 and view["span_count"] == 1
            # Stats count only acme; asking for globex counts nothing.
            status, stats, _ = await api.get("/stats", token=acme, params={"from": "now-2h"})
            assert status == 200 and stats["total"] == len(data["acme"])
            status, stats, _ = await api.get(
                "/stats", token=acme, params={"from": "now-2h", "tenant": "globex"}
            )
            assert status == 200 and stats["total"] == 0
            # The export streams acme's events only.
            async with api.session.get(  # type: ignore[union-attr]
                api.base + "/export",
                params={"format": "ndjson", "tenant": "globex"},
                headers={"Authorization": f"Bearer {acme}"},
            ) as resp:
                assert resp.status == 200 and await resp.read() == b""
            async with api.session.get(  # type: ignore[union-attr]
                api.base + "/export",
                params={"format": "ndjson"},
                headers={"Authorization": f"Bearer {acme}"},
            ) as resp:
                lines = (await resp.read()).splitlines()
            assert {orjson.loads(x)["event"]["id"] for x in lines} == _ids(data["acme"])
            # Chain status counts every tenant: refused to a scoped token.
            status, body, _ = await api.get("/chains", token=acme)
            assert status == 403
            # A cursor from globex's search, replayed by acme, continues as acme's scope.
            status, page, _ = await api.get(
                "/events", token=TOKENS["globex"], params={"limit": "2"}
            )
            assert status == 200 and page["next_cursor"]
            status, page, _ = await api.get(
                "/events", token=acme, params={"cursor": page["next_cursor"], "limit": "100"}
            )
            assert status == 200 and page["events"]
            assert {e["organization"]["id"] for e in page["events"]} == {"acme"}
            # An unscoped reader still sees every tenant.
            status, page, _ = await api.get("/events", params={"limit": "100"})
            assert page["count"] == sum(len(v) for v in data.values())

    _run(scenario())


def test_refusals_are_recorded_and_rate_limited(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    prepare(clean_es)

    async def scenario() -> None:
        async with Api(es_url, tmp_path, max_refusals_per_min=3) as api:
            for _ in range(3):
                status, _, _ = await api.get("/events", token="guess-0123")
                assert status == 401
            status, body, headers = await api.get("/events", token="guess-0124")
            assert status == 429 and int(headers["Retry-After"]) >= 1
            assert "refused" in body["error"]["message"]
            # Locked out: even a valid token from this address waits out the minute.
            status, _, _ = await api.get("/events")
            assert status == 429

    _run(scenario())
    clean_es.indices.refresh(index="audit-events*")
    resp = clean_es.search(
        index="audit-events",
        query={"term": {"user.id": "unauthenticated"}},
        size=100,
    )
    hits = [h["_source"] for h in resp["hits"]["hits"]]
    assert len(hits) == 3 and {h["audit"]["outcome"] for h in hits} == {"denied"}
    assert "guess-0123" not in orjson.dumps(hits).decode()


def test_read_limits_answer_clear_4xx(clean_es: Elasticsearch, es_url: str, tmp_path: Path) -> None:
    _dataset(clean_es)

    async def scenario() -> None:
        async with Api(es_url, tmp_path, audit_queries=False, max_open_cursors_per_token=2) as api:
            status, body, _ = await api.get("/events", params={"action": "*login"})
            assert status == 400 and body["error"]["param"] == "action"
            assert "leading wildcard" in body["error"]["message"]
            cursors = []
            for _ in range(2):
                status, page, _ = await api.get("/events", params={"limit": "1"})
                assert status == 200 and page["next_cursor"]
                cursors.append(page["next_cursor"])
            # A third search past the cap of 2 gives up the oldest cursor: it answers 410.
            status, page, _ = await api.get("/events", params={"limit": "1"})
            assert status == 200 and page["next_cursor"]
            status, body, _ = await api.get("/events", params={"cursor": cursors[0]})
            assert status == 410 and body["error"]["code"] == "cursor_expired"
            status, page, _ = await api.get("/events", params={"cursor": cursors[1]})
            assert status == 200

    _run(scenario())
