"""The query API against the real Elasticsearch: filters, auth, errors, auditing of queries."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from indexer.integrity.blocks import id_keys
from tests.indexer.query.query_harness import Api, index_records, prepare, record

pytestmark = pytest.mark.integration

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _dataset(es: Elasticsearch) -> list[dict[str, Any]]:
    prepare(es)
    base = time.time_ns() - 3600 * 1_000_000_000
    recs = []
    for i in range(30):
        recs.append(
            record(
                i,
                ts_ns=base + i * 60 * 1_000_000_000,
                action=("invoice.update", "invoice.create", "user.login")[i % 3],
                service=("billing", "auth")[i % 2],
                outcome=("success", "failure", "denied")[i % 3],
                trace_id=TRACE if i < 3 else "",
                span_id="00f067aa0ba902b7" if i < 3 else "",
                body=f"refund approved for order {i}" if i == 5 else None,
            )
        )
    # Values that look like query syntax must only ever match themselves.
    recs.append(record(100, actor="bob OR *:*", body='{"query":{"match_all":{}}}'))
    recs.append(record(101, actor="user.id:*", action="invoice.v2?"))
    return index_records(es, recs)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _query_audits(es: Elasticsearch, subject: str) -> list[dict[str, Any]]:
    es.indices.refresh(index="audit-events*")
    resp = es.search(
        index="audit-events",
        query={
            "bool": {
                "filter": [
                    {"term": {"user.id": subject}},
                    {"term": {"audit.resource.type": "audit_log"}},
                ]
            }
        },
        size=100,
        sort=[{"@timestamp": "asc"}],
    )
    return [h["_source"] for h in resp["hits"]["hits"]]


def test_filters_return_exactly_the_matching_events(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    docs = _dataset(clean_es)

    async def scenario() -> None:
        async with Api(es_url, tmp_path) as api:

            async def ids(**params: Any) -> set[str]:
                status, body, _ = await api.get("/events", params=params)
                assert status == 200, body
                return {
                    e["event"]["id"]
                    for e in body["events"]
                    if e.get("audit", {}).get("resource", {}).get("type") != "audit_log"
                }

            def expect(pred: Any) -> set[str]:
                return {d["event"]["id"] for d in docs if pred(d)}

            assert await ids(action="invoice.update") == expect(
                lambda d: d["event"]["action"] == "invoice.update"
            )
            assert await ids(action="invoice.*") == expect(
                lambda d: d["event"]["action"].startswith("invoice.")
            )
            assert await ids(action="us*.login") == expect(
                lambda d: d["event"]["action"] == "user.login"
            )
            assert await ids(actor="user-3") == expect(lambda d: d["user"]["id"] == "user-3")
            assert await ids(outcome=["failure", "denied"], service="auth") == expect(
                lambda d: (
                    d["audit"]["outcome"] in ("failure", "denied")
                    and d["service"]["name"] == "auth"
                )
            )
            assert await ids(trace_id=TRACE.upper()) == expect(
                lambda d: d.get("trace", {}).get("id") == TRACE
            )
            assert await ids(resource_type="invoice", resource_id="invoice-4") == expect(
                lambda d: d["audit"]["resource"]["id"] == "invoice-4"
            )
            # Time range: from inclusive, to exclusive.
            mid = sorted(d["@timestamp"] for d in docs[:30])
            got = await ids(
                **{"from": mid[10], "to": mid[20], "actor": [f"user-{i}" for i in range(7)]}
            )
            assert got == expect(lambda d: mid[10] <= d["@timestamp"] < mid[20])
            assert await ids(q="refund approved") == expect(
                lambda d: "refund approved" in d.get("message", "")
            )
            # Newest first with the id as tiebreak.
            _, body, _ = await api.get("/events", params={"service": "billing", "limit": "1000"})
            ts = [e["@timestamp"] for e in body["events"]]
            assert ts == sorted(ts, reverse=True)

    _run(scenario())


def test_injection_attempts_are_literal_text(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    docs = _dataset(clean_es)
    by_actor = {d["user"]["id"]: d["event"]["id"] for d in docs}

    async def scenario() -> None:
        async with Api(es_url, tmp_path) as api:

            async def ids(**params: Any) -> set[str]:
                status, body, _ = await api.get("/events", params=params)
                assert status == 200, body
                return {e["event"]["id"] for e in body["events"]}

            # Lucene syntax in a term filter matches only the identical literal value.
            assert await ids(actor="bob OR *:*") == {by_actor["bob OR *:*"]}
            assert await ids(actor="user.id:*") == {by_actor["user.id:*"]}
            assert await ids(actor="*") == set()
            # '?' is not a pattern character in action filters: it is escaped.
            assert await ids(action="invoice.v2?") == {by_actor["user.id:*"]}
            assert await ids(action="invoice.v?*") == set()
            # Free text: operators and JSON are words, not syntax.
            assert await ids(q="*") == set()
            assert await ids(q="user.id:* OR 1=1") == set()
            assert await ids(q='{"query":{"match_all":{}}}') <= {by_actor["bob OR *:*"]}
            assert await ids(q='"match_all"') == {by_actor["bob OR *:*"]}
            refund = await ids(q="refund")
            assert len(refund) == 1
            assert await ids(q="-refund") <= refund  # '-' is no NOT operator
            # JSON as a parameter value is just a value.
            assert await ids(service='{"match_all":{}}') == set()

    _run(scenario())


def test_bad_filters_are_clear_4xx(clean_es: Elasticsearch, es_url: str, tmp_path: Path) -> None:
    _dataset(clean_es)

    async def scenario() -> None:
        async with Api(es_url, tmp_path) as api:
            cases = [
                ({"from": "2024-05-02T00:00:00Z", "to": "2024-05-01T00:00:00Z"}, "from", "before"),
                ({"from": "yesterday"}, "from", "not a time"),
                ({"from": "2024-05-01T10:00:00"}, "from", "no time zone"),
                ({"to": "2024-13-01T00:00:00Z"}, "to", "not a valid time"),
                ({"limit": "1001"}, "limit", "at most 1000"),
                ({"limit": "0"}, "limit", "at least 1"),
                ({"limit": "ten"}, "limit", "not an integer"),
                ({"actr": "alice"}, "actr", "unknown parameter"),
                ({"outcome": "maybe"}, "outcome", "not one of"),
                ({"trace_id": "xyz"}, "trace_id", "hex"),
                ({"cursor": "not-a-cursor"}, "cursor", "not a cursor"),
                ({"cursor": "eyJ2IjoxfQ"}, "cursor", "not a cursor"),
                ({"q": "a", "actor": "x" * 2000}, "actor", "longer than"),
            ]
            for params, param, words in cases:
                status, body, _ = await api.get("/events", params=params)
                assert status == 400, (params, body)
                assert body["error"]["param"] == param, (params, body)
                assert words in body["error"]["message"], (params, body)
            status, body, _ = await api.get("/traces/not-a-trace")
            assert status == 400 and body["error"]["param"] == "trace_id"
            status, body, _ = await api.get("/events/" + "a" * 200)
            assert status == 400
            status, body, _ = await api.get("/events/0190d8c2-0000-7000-8000-000000000000")
            assert status == 404 and body["error"]["code"] == "not_found"
            status, body, _ = await api.get("/stats", params={"top": "1000"})
            assert status == 400 and body["error"]["param"] == "top"

    _run(scenario())


def test_auth_refusals_and_every_query_is_audited(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    docs = _dataset(clean_es)

    async def scenario() -> None:
        async with Api(es_url, tmp_path) as api:
            status, body, headers = await api.get("/events", role=None)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer ")
            status, body, headers = await api.get("/events", token="wrong-token")
            assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
            status, body, headers = await api.get("/events", role="stats")
            assert status == 403 and 'error="insufficient_scope"' in headers["WWW-Authenticate"]
            status, body, _ = await api.get("/traces/" + TRACE, role="stats")
            assert status == 403 and body["error"]["code"] == "forbidden"
            # The stats role may see counts; reader may do everything.
            # (the denied attempts above are events too: count only the data set)
            status, stats, _ = await api.get(
                "/stats", role="stats", params={"resource_type": "invoice"}
            )
            assert status == 200 and stats["total"] == len(docs)
            status, page, _ = await api.get("/events", params={"actor": "user-2"})
            assert status == 200 and page["count"] > 0
            status, one, _ = await api.get(f"/events/{docs[0]['event']['id']}")
            assert status == 200 and one["event"]["event"]["id"] == docs[0]["event"]["id"]
            assert one["trace"]["id"] == TRACE and one["block"] is None
            status, trace, _ = await api.get(f"/traces/{TRACE}")
            assert status == 200 and trace["event_count"] == 3
            # No auth for the description and health.
            status, doc, _ = await api.get("/openapi.json", role=None)
            assert status == 200 and doc["openapi"] == "3.1.0" and "/events" in doc["paths"]
            status, health, _ = await api.get("/healthz", role=None)
            assert status == 200 and health["status"] == "ok"

        alice = _query_audits(clean_es, "alice")
        actions = [(a["event"]["action"], a["audit"]["outcome"]) for a in alice]
        assert actions == [
            ("audit_log.search", "success"),
            ("audit_log.read", "success"),
            ("audit_log.read", "success"),
        ], actions
        assert alice[0]["audit"]["category"] == "data_access"
        assert '"actor":["user-2"]' in alice[0]["audit"]["extra"]["audit_log.query"]
        assert alice[1]["audit"]["resource"]["id"] == docs[0]["event"]["id"]
        assert alice[2]["audit"]["resource"]["id"] == TRACE
        dash = _query_audits(clean_es, "dashboards")
        assert [(a["event"]["action"], a["audit"]["outcome"]) for a in dash] == [
            ("audit_log.search", "denied"),
            ("audit_log.search", "denied"),
            ("audit_log.stats", "success"),
        ]
        # Unknown tokens have no subject: nothing is recorded under a guessed name.
        assert not _query_audits(clean_es, "wrong-token")

    _run(scenario())


def test_stats_counts(clean_es: Elasticsearch, es_url: str, tmp_path: Path) -> None:
    docs = _dataset(clean_es)

    async def scenario() -> None:
        async with Api(es_url, tmp_path, audit_queries=False) as api:
            status, body, _ = await api.get(
                "/stats", params={"from": "now-2h", "service": "billing"}
            )
            assert status == 200, body
            billing = [d for d in docs if d["service"]["name"] == "billing"]
            assert body["total"] == len(billing)
            by_outcome = {b["key"]: b["count"] for b in body["by_outcome"]}
            for outcome in ("success", "failure", "denied"):
                assert by_outcome.get(outcome, 0) == sum(
                    1 for d in billing if d["audit"]["outcome"] == outcome
                )
            assert sum(b["count"] for b in body["over_time"]) == len(billing)
            assert body["window"]["interval"] == "1m"
            assert body["top_actors"][0]["count"] >= body["top_actors"][-1]["count"]
            assert {r["type"] for r in body["top_resources"]} == {"invoice"}

    _run(scenario())


def test_event_shows_its_sealed_block(clean_es: Elasticsearch, es_url: str, tmp_path: Path) -> None:
    docs = _dataset(clean_es)
    target = docs[4]["event"]["id"]
    ids = [d["event"]["id"] for d in docs[2:6]]
    clean_es.index(
        index="audit-blocks",
        id="chain-a:00000000000000000003",
        document={
            "chain_id": "chain-a",
            "sequence": 3,
            "kind": "block",
            "first_leaf": 40,
            "tree_size": 44,
            "leaf_count": 4,
            "root_hash": "cm9vdA==",
            "event_ids": ids,
            "id_keys": id_keys(ids),
            "leaf_hashes": ["aA=="] * 4,
        },
        refresh=True,
    )

    async def scenario() -> None:
        async with Api(es_url, tmp_path, audit_queries=False) as api:
            status, body, _ = await api.get(f"/events/{target}")
            assert status == 200, body
            block = body["block"]
            assert block["id"] == "chain-a:00000000000000000003"
            assert block["leaf_index"] == 42 and block["tree_size"] == 44
            assert "leaf_hashes" not in block and "event_ids" not in block
            status, body, _ = await api.get(f"/events/{docs[0]['event']['id']}")
            assert status == 200 and body["block"] is None

    _run(scenario())
