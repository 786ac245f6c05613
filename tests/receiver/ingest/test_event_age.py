"""Writers' timestamps choose the daily index: events older than ``max_event_age_days`` are
refused with the reason and dead-lettered, so no writer can create an index per day back to
the schema's earliest date."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from elasticsearch import Elasticsearch

from indexer.indices import EVENTS_ALIAS, EVENTS_PATTERN, REJECTED_ALIAS
from receiver.ingest.settings import IngestSettings
from tests.receiver.conftest import ConsumerFactory, RecordFactory

pytestmark = pytest.mark.integration

DAY_NS = 86_400 * 1_000_000_000


def test_events_older_than_the_bound_are_refused_and_create_no_index(
    clean_es: Elasticsearch, make_consumer: ConsumerFactory, make_record: RecordFactory
) -> None:
    now = time.time_ns()
    fresh = dataclasses.replace(make_record(1), time_unix_nano=now - 20 * DAY_NS)
    stale = [
        dataclasses.replace(make_record(2 + i), time_unix_nano=now - (31 + 100 * i) * DAY_NS)
        for i in range(3)
    ]
    consumer = make_consumer(max_event_age_days=30)
    assert consumer.settings.max_event_age_days == 30

    async def go() -> object:
        await consumer.start()
        try:
            return await consumer.consume_logs([stale[0], fresh, *stale[1:]])
        finally:
            await consumer.shutdown(10)

    result = asyncio.run(go())
    assert result.accepted == 1 and result.rejected == 3  # type: ignore[attr-defined]
    message = result.error_message  # type: ignore[attr-defined]
    assert "record 0: time_unix_nano: event time is 31 days old" in message
    assert "older than max_event_age_days (30)" in message and "record 2:" in message
    clean_es.indices.refresh(index="audit-*")
    assert len(clean_es.indices.get(index=EVENTS_PATTERN)) == 1  # only the fresh day's
    (stored,) = clean_es.search(index=EVENTS_ALIAS)["hits"]["hits"]
    assert stored["_id"] == fresh.attributes["audit.event.id"]
    dead = clean_es.search(index=REJECTED_ALIAS, size=10)["hits"]["hits"]
    assert sorted(d["_source"]["event"]["id"] for d in dead) == sorted(
        r.attributes["audit.event.id"] for r in stale
    )


def test_the_bound_is_validated_and_zero_turns_it_off() -> None:
    with pytest.raises(ValueError, match="max_event_age_days"):
        IngestSettings(max_event_age_days=-1)
    assert IngestSettings(max_event_age_days=0).max_event_age_days == 0
