"""Placement: one copy per event id across all days, and a bounded set of daily indices.

An event whose id is a UUIDv7 is stored in the daily index of the id's embedded time, so the
same id sent again with another day's timestamp meets the first copy there (409). Events
whose day is older than ``max_event_age_days`` are refused with the reason and
dead-lettered, so no writer can create an index per day back to the schema's earliest date.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid

import pytest
from elasticsearch import Elasticsearch

from indexer.indices import EVENTS_ALIAS, EVENTS_PATTERN, REJECTED_ALIAS
from otel_audit.emit import event_id_at, new_event_id
from otel_audit.record import LogRecordData
from receiver.ingest.settings import IngestSettings
from tests.receiver.conftest import ConsumerFactory, RecordFactory

pytestmark = pytest.mark.integration

DAY_NS = 86_400 * 1_000_000_000


def test_events_older_than_the_bound_are_refused_and_create_no_index(
    clean_es: Elasticsearch, make_consumer: ConsumerFactory, make_record: RecordFactory
) -> None:
    now = time.time_ns()

    def dated(n: int, when: int) -> LogRecordData:
        return dataclasses.replace(
            make_record(n, event_id=event_id_at(when // 1_000_000)), time_unix_nano=when
        )

    fresh = dated(1, now - 20 * DAY_NS)
    stale = [dated(2 + i, now - (31 + 100 * i) * DAY_NS) for i in range(3)]
    # Without an id the receiver derives one, and the event's own time picks the day.
    stale[0] = dataclasses.replace(
        make_record(2, audit__event__id=None), time_unix_nano=now - 31 * DAY_NS
    )
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
    assert "record 0: time_unix_nano: its event time is 31 days old" in message
    assert "record 2: time_unix_nano: its event id's UUIDv7 time is 131 days old" in message
    assert "older than max_event_age_days (30)" in message and "record 2:" in message
    clean_es.indices.refresh(index="audit-*")
    assert len(clean_es.indices.get(index=EVENTS_PATTERN)) == 1  # only the fresh day's
    (stored,) = clean_es.search(index=EVENTS_ALIAS)["hits"]["hits"]
    assert stored["_id"] == fresh.attributes["audit.event.id"]
    dead = clean_es.search(index=REJECTED_ALIAS, size=10)["hits"]["hits"]
    assert len(dead) == 3
    assert {r.attributes["audit.event.id"] for r in stale[1:]} <= {
        d["_source"]["event"].get("id") for d in dead
    }


def _run(consumer: object, *batches: list[object]) -> list[object]:
    async def go() -> list[object]:
        await consumer.start()  # type: ignore[attr-defined]
        try:
            return [await consumer.consume_logs(b) for b in batches]  # type: ignore[attr-defined]
        finally:
            await consumer.shutdown(10)  # type: ignore[attr-defined]

    return asyncio.run(go())


def test_the_same_id_with_another_days_timestamp_is_stored_once(
    clean_es: Elasticsearch, make_consumer: ConsumerFactory, make_record: RecordFactory
) -> None:
    now = time.time_ns()
    event_id = new_event_id(now // 1_000_000)
    first = dataclasses.replace(make_record(1, event_id=event_id), time_unix_nano=now)
    # The attacker's copy: same id, a timestamp three days earlier (another daily index).
    other_day = dataclasses.replace(first, time_unix_nano=now - 3 * DAY_NS)
    a, b, c = _run(make_consumer(), [first], [other_day], [first])
    assert a.rejected == 0 and c.rejected == 0  # type: ignore[attr-defined]  # c: duplicate
    assert b.rejected == 1  # type: ignore[attr-defined]
    assert f"event id {event_id} is already stored" in b.error_message  # type: ignore[attr-defined]
    clean_es.indices.refresh(index="audit-*")
    hits = clean_es.search(index=EVENTS_PATTERN, query={"ids": {"values": [event_id]}})
    assert hits["hits"]["total"]["value"] == 1, "one copy across all days"
    assert len(clean_es.indices.get(index=EVENTS_PATTERN)) == 1
    (dead,) = clean_es.search(index=REJECTED_ALIAS)["hits"]["hits"]
    assert dead["_source"]["kind"] == "conflict"


def test_an_id_that_is_not_a_uuid7_is_refused_so_it_cannot_pick_its_day(
    clean_es: Elasticsearch, make_consumer: ConsumerFactory, make_record: RecordFactory
) -> None:
    """A UUIDv4 id carries no time: placed by the event's timestamp it could be stored once
    per day. The schema refuses it, on every day it is sent, and nothing is stored."""
    now = time.time_ns()
    v4 = str(uuid.uuid4())
    first = dataclasses.replace(make_record(1, event_id=v4), time_unix_nano=now)
    other_day = dataclasses.replace(first, time_unix_nano=now - 3 * DAY_NS)
    a, b = _run(make_consumer(), [first], [other_day])
    for result in (a, b):
        assert result.rejected == 1  # type: ignore[attr-defined]
        message = result.error_message  # type: ignore[attr-defined]
        assert (
            f"audit.event.id: '{v4}' does not match" in message and "-7[0-9a-fA-F]{3}-" in message
        )
    clean_es.indices.refresh(index="audit-*")
    assert not clean_es.indices.get(index=EVENTS_PATTERN, allow_no_indices=True)
    dead = clean_es.search(index=REJECTED_ALIAS, size=10)["hits"]["hits"]
    assert [d["_source"]["kind"] for d in dead] == ["validation", "validation"]


def test_a_uuid7_id_from_long_ago_is_refused_whatever_its_timestamp(
    clean_es: Elasticsearch, make_consumer: ConsumerFactory, make_record: RecordFactory
) -> None:
    now = time.time_ns()
    old_id = event_id_at((now - 90 * DAY_NS) // 1_000_000)
    record = dataclasses.replace(make_record(1, event_id=old_id), time_unix_nano=now)
    (result,) = _run(make_consumer(max_event_age_days=30), [record])
    assert result.rejected == 1  # type: ignore[attr-defined]
    assert "its event id's UUIDv7 time is 90 days old" in result.error_message  # type: ignore[attr-defined]
    clean_es.indices.refresh(index="audit-*")
    assert not clean_es.indices.get(index=EVENTS_PATTERN, allow_no_indices=True)


def test_the_bound_is_validated_and_zero_turns_it_off() -> None:
    with pytest.raises(ValueError, match="max_event_age_days"):
        IngestSettings(max_event_age_days=-1)
    assert IngestSettings(max_event_age_days=0).max_event_age_days == 0
