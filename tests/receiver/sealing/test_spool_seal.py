"""Events spooled while Elasticsearch is away are sealed when the spool replays them.

The live write path hands the sealer leaf hashes it computed while building each document;
a spool replay hands it the documents read back from the spool instead, and the sealer
hashes those. Both must give the leaves verify recomputes from what Elasticsearch stores.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from elastic_transport import ConnectionError as TransportConnectionError
from elasticsearch import AsyncElasticsearch, Elasticsearch

from otel_audit.integrity import generate_private_key
from receiver.ingest.consumer import IngestConsumer, IngestSettings
from receiver.ingest.spool import Spool
from receiver.sealing.sealer import Sealer
from tests.receiver.conftest import audit_record
from tests.support.integrity_harness import integrity_config, run, run_verify

pytestmark = pytest.mark.integration

KEY = generate_private_key()


class OutageES:
    """Refuses every ``_bulk`` while ``down`` is set, as an unreachable node would."""

    def __init__(self, es: AsyncElasticsearch) -> None:
        self._es = es
        self.down = False
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._es, name)

    async def bulk(self, **kw: Any) -> Any:
        if self.down:
            self.refused += 1
            raise TransportConnectionError("injected outage")
        return await self._es.bulk(**kw)


async def _live_then_spooled(es_url: str, state: Path) -> tuple[list[str], int, int]:
    """Ingest one batch live and one during an outage; returns ids and both counts."""
    es = OutageES(AsyncElasticsearch(es_url, request_timeout=30, max_retries=0))
    sealer = Sealer(es, integrity_config(state), private_key=KEY)  # type: ignore[arg-type]
    consumer = IngestConsumer(
        es,  # type: ignore[arg-type]
        Spool(str(state / "spool"), 64 * 1024 * 1024),
        IngestSettings(es_url=es_url, spool_dir=str(state / "spool"), bulk_flush_interval_ms=2),
        sealer=sealer,
        close_client=True,
    )
    await consumer.start()
    try:
        live = [audit_record(i) for i in range(40)]
        assert (await consumer.consume_logs(live)).accepted == 40
        es.down = True
        spooled = [audit_record(100 + i) for i in range(40)]
        assert (await consumer.consume_logs(spooled)).accepted == 40  # acknowledged: spooled
        sealed_while_down = sealer.events_sealed + sealer.pending_count
        es.down = False
        deadline = time.monotonic() + 60
        while sealer.events_sealed + sealer.pending_count < 80:
            assert time.monotonic() < deadline, "the spool was not replayed into the sealer"
            await asyncio.sleep(0.05)
        await sealer.force_flush()
    finally:
        await consumer.shutdown(10)
    ids = [r.attributes["audit.event.id"] for r in live + spooled]
    return ids, sealed_while_down, es.refused


def test_spool_replay_is_sealed_and_verifies(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    ids, sealed_while_down, refused = run(_live_then_spooled(es_url, tmp_path))
    assert refused >= 1
    assert sealed_while_down == 40  # only the live batch reached the sealer
    report = run_verify(clean_es, tmp_path, [KEY])
    assert report.ok, report.to_json_dict()
    assert report.events_checked == len(ids) == 80
