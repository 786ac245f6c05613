"""The sweeper: events stored in Elasticsearch whose hand-off to the sealer failed are
sealed without waiting for the client to retry; meanwhile sealing reports itself stuck.

The journal's disk refuses writes (an OSError injected into ``Journal.append``) for a
while: the write path answers the client retryably, the client never retries, and the
events must still end up sealed once the disk is back.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch

from otel_audit.integrity import generate_private_key
from receiver import metrics
from receiver.errors import Unavailable
from receiver.sealing import state as sealing_state
from tests.receiver.conftest import audit_record
from tests.support.integrity_harness import run_verify, sealed_consumer

pytestmark = pytest.mark.integration

KEY = generate_private_key()


def test_stored_events_whose_journaling_failed_are_swept_into_a_block(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk_broken = True
    real_append = sealing_state.Journal.append

    def append(self: sealing_state.Journal, entries: sealing_state.Entries) -> list[int]:
        if disk_broken:
            raise OSError(28, "No space left on device")
        return real_append(self, entries)

    monkeypatch.setattr(sealing_state.Journal, "append", append)
    state = tmp_path / "state"

    async def scenario() -> dict[str, Any]:
        nonlocal disk_broken
        es = AsyncElasticsearch(es_url, request_timeout=30, max_retries=0)
        sealer, consumer = sealed_consumer(
            es, es_url, state, KEY, sweep_interval_s=0.2, stuck_after_s=0.5
        )
        await consumer.start()
        try:
            records = [audit_record(i) for i in range(30)]
            with pytest.raises(Unavailable, match="stored but not sealed"):
                await consumer.consume_logs(records)  # the client never retries
            assert sealer.stats()["sweeper_backlog_events"] == 30
            await asyncio.sleep(0.8)
            stuck, why = consumer.sealing_stuck()
            assert stuck and "30 stored events could not be journaled" in why, why
            assert b"otel_audit_receiver_sealer_sweeper_backlog_events 30.0" in metrics.render()

            disk_broken = False
            deadline = time.monotonic() + 20
            while sealer.stats()["sweeper_backlog_events"] and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await sealer.force_flush()
            assert consumer.sealing_stuck() == (False, "")
            stats = sealer.stats()
            assert b"otel_audit_receiver_sealer_sweeper_events_total 30.0" in metrics.render()
            return {"ids": [r.attributes["audit.event.id"] for r in records], **stats}
        finally:
            await consumer.shutdown(10)
            metrics.observe_sealer(None)

    out = asyncio.run(scenario())
    assert out["sweeper_events_found"] == 30 and out["sweeper_passes"] >= 1
    assert out["events_sealed"] == 30 and out["pending_events"] == 0
    report = run_verify(clean_es, state, [KEY], chain_id="test-chain")
    assert report.ok and report.events_checked == 30, report.to_json_dict()
