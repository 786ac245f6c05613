"""Archived days stay searchable: the query API answers a range reaching into them from
the archive (same filters, same shape, marked archived, one order across both tiers);
``restore`` brings them back into Elasticsearch, where verify checks them as usual."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from elasticsearch import Elasticsearch

from indexer.lifecycle.restore import restore_days
from indexer.local_s3 import LocalS3
from indexer.query.api import start_query_api
from indexer.query.auth import hash_token
from receiver.config import ReceiverConfig, load_config
from receiver.lifecycle import cold_store_of
from tests.indexer.lifecycle.verify_helpers import keyring, verify_es
from tests.support.lifecycle_harness import (
    Clock,
    Ingest,
    day_name,
    day_start_ms,
    records_on,
    run,
    runner,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.lifecycle]
TOKEN = "lifecycle-reader-0123456789"


async def _pages(config: ReceiverConfig, ingest: Ingest, params: dict[str, str]) -> list[Any]:
    """Every page of ``GET /events`` with ``params``, through the real API."""
    runner_ = await start_query_api(config, _async_write(ingest))
    port = runner_.addresses[0][1]
    base = f"http://127.0.0.1:{port}/api/v1/events"
    pages = []
    try:
        async with aiohttp.ClientSession() as session:
            query: dict[str, str] = dict(params)
            while True:
                async with session.get(
                    base, params=query, headers={"Authorization": f"Bearer {TOKEN}"}
                ) as resp:
                    body = orjson.loads(await resp.read())
                    assert resp.status == 200, body
                pages.append(body)
                if not body["next_cursor"]:
                    return pages
                query = {"cursor": body["next_cursor"], "limit": params.get("limit", "100")}
    finally:
        await runner_.cleanup()


def _async_write(ingest: Ingest) -> Any:
    async def write(records: list[Any]) -> Any:
        assert ingest.consumer is not None
        future = asyncio.run_coroutine_threadsafe(
            ingest.consumer.consume_logs(records), ingest.loop
        )
        return await asyncio.wrap_future(future)

    return write


def _query_section() -> dict[str, Any]:
    return {
        "tokens": [{"subject": "auditor", "sha256": hash_token(TOKEN), "roles": ["reader"]}],
        "endpoint": "127.0.0.1:0",
    }


def test_archived_day_is_found_with_the_same_filters_then_restored(
    lifecycle_es: Elasticsearch, s3: LocalS3, tmp_path: Path
) -> None:
    es = lifecycle_es
    url = str(es.transport.node_pool.get().base_url)
    path = write_config(tmp_path, url, s3, query=_query_section())
    config = load_config(path)
    old, hot = day_start_ms(40), day_start_ms(5)
    stored = records_on(old, 60) + records_on(hot, 40)
    with Ingest(config) as ingest:
        ingest.store(stored)
        ingest.seal()
        run(runner(path, ingest.record, Clock()))
        ingest.seal()
        assert not es.indices.exists(index=f"audit-events-{day_name(old)}")

        # actor user-3, failures and successes, across the archived and the hot day.
        want = sorted(
            (
                (r.time_unix_nano, r.attributes["audit.event.id"])
                for r in stored
                if r.attributes["audit.actor.id"] == "user-3"
            ),
            key=lambda p: (-p[0], p[1]),
        )
        params = {"actor": "user-3", "from": f"{day_name(old).replace('.', '-')}", "limit": "4"}
        pages = asyncio.run(_pages(config, ingest, params))
        got = [e for p in pages for e in p["events"]]
        assert [e["event"]["id"] for e in got] == [eid for _ts, eid in want]
        archived = [e for e in got if e.get("integrity", {}).get("tier") == "archive"]
        assert len(archived) == sum(1 for ts, _ in want if ts < hot * 1_000_000)
        assert {e["integrity"]["day"] for e in archived} == {day_name(old)}
        assert pages[0]["archived_days"] == [day_name(old)]

        # Action patterns, outcome and free text filter the archive as they do the index.
        only_old = {"from": day_name(old).replace(".", "-"), "to": day_name(hot).replace(".", "-")}
        reads = asyncio.run(
            _pages(config, ingest, {**only_old, "action": "invoice.re*", "outcome": "failure"})
        )
        hits = [e for p in reads for e in p["events"]]
        expect = [
            r for r in records_on(old, 60)
            if r.attributes["audit.action"] == "invoice.read"
            and r.attributes["audit.outcome"] == "failure"
        ]  # fmt: skip
        assert len(hits) == len(expect) > 0
        text = asyncio.run(_pages(config, ingest, {**only_old, "q": '"inv-7 touched"'}))
        assert [e["audit"]["resource"]["id"] for p in text for e in p["events"]] == ["inv-7"]

        # Restore: back in Elasticsearch, no longer marked, verify clean.
        report = restore_days(
            es, cold_store_of(config), keyring(tmp_path),
            first=date.fromtimestamp(old / 1000), last=date.fromtimestamp(old / 1000),
            keep_days=7, now_ms=Clock()(), record=ingest.record, actor="auditor",
        )  # fmt: skip
        assert report.restored == {day_name(old): 60}
        ingest.seal()
        again = asyncio.run(_pages(config, ingest, params))
        events = [e for p in again for e in p["events"]]
        assert [e["event"]["id"] for e in events] == [eid for _ts, eid in want]
        assert not any("integrity" in e for e in events)
        ingest.seal()  # the queries' own audit events
        result = verify_es(es, tmp_path)
        assert result.ok, [f.message for f in result.findings[:5]]

        # The policy leaves a restored day alone until the restore expires.
        clock = Clock()
        kept = run(runner(path, ingest.record, clock))
        assert {d.day: d.action for d in kept.days}[day_name(old)] == "keep"
        clock.advance_days(8)
        later = run(runner(path, ingest.record, clock))
        ingest.seal()
        assert {d.day: d.action for d in later.days}[day_name(old)] == "index_delete"
    assert verify_es(es, tmp_path).ok
