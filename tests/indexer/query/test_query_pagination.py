"""Cursor pages over 10,000 events never skip or repeat one while new events arrive."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from tests.indexer.query.query_harness import Api, index_records, prepare, record

pytestmark = pytest.mark.integration

OLD = 10_000


def test_paging_while_ingesting_returns_every_old_event_once(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    prepare(clean_es)
    start = time.time_ns() - 2 * 3600 * 1_000_000_000
    # Many events share a timestamp so the event-id tiebreak is exercised across pages.
    old = index_records(
        clean_es, (record(i, ts_ns=start + (i // 4) * 1_000_000) for i in range(OLD))
    )
    old_ids = {d["event"]["id"] for d in old}
    assert len(old_ids) == OLD

    async def scenario() -> tuple[Counter[str], int]:
        async with Api(es_url, tmp_path) as api:
            assert api.consumer is not None
            consumer = api.consumer
            stop = asyncio.Event()
            rng = random.Random(7)
            ingested = 0

            async def ingest() -> None:
                nonlocal ingested
                n = OLD
                while not stop.is_set():
                    # New events land before, between and after the old ones.
                    batch = [
                        record(n + k, ts_ns=start + rng.randrange(-(10**9), OLD * 300_000 + 10**9))
                        for k in range(50)
                    ]
                    n += 50
                    result = await consumer.consume_logs(batch)
                    assert result.rejected == 0, result
                    ingested += 50
                    await asyncio.sleep(0.01)

            feeder = asyncio.create_task(ingest())
            seen: Counter[str] = Counter()
            try:
                status, page, _ = await api.get("/events", params={"limit": "700"})
                pages = 1
                while True:
                    assert status == 200, page
                    seen.update(e["event"]["id"] for e in page["events"])
                    cursor = page["next_cursor"]
                    if cursor is None:
                        break
                    # Make sure events keep arriving between pages.
                    await asyncio.sleep(0.05)
                    status, page, _ = await api.get(
                        "/events", params={"cursor": cursor, "limit": "700"}
                    )
                    pages += 1
                assert pages >= OLD // 700
            finally:
                stop.set()
                await feeder
            return seen, ingested

    seen, ingested = asyncio.run(scenario())
    assert ingested > 0
    repeated = [i for i, c in seen.items() if c > 1]
    assert not repeated, f"{len(repeated)} events returned more than once"
    missing = old_ids - set(seen)
    assert not missing, f"{len(missing)} old events never returned"
    # The point in time froze the view at the first page: later arrivals do not creep in.
    assert len(set(seen) - old_ids) < ingested
