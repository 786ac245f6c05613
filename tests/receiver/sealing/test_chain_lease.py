"""Two receivers with one chain id refuse to run: the chain's lease in Elasticsearch.

Each would otherwise sign its own sequence 0, 1, 2 ... of the same chain and fork it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch

from indexer.indices import CHAIN_LEASES_INDEX
from otel_audit.integrity import generate_private_key
from receiver.sealing.lease import ChainInUse, ChainLease
from receiver.sealing.sealer import Sealer
from tests.support.integrity_harness import ingest, integrity_config, run_verify

pytestmark = pytest.mark.integration

KEY = generate_private_key()


def test_a_second_sealer_of_a_live_chain_is_refused_until_the_first_stops(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        es = AsyncElasticsearch(es_url, request_timeout=30, max_retries=0)
        first = Sealer(es, integrity_config(tmp_path / "a"), private_key=KEY)
        second = Sealer(es, integrity_config(tmp_path / "b"), private_key=KEY)
        try:
            await first.start()
            with pytest.raises(ChainInUse, match="another live receiver") as refused:
                await second.start()
            assert "test-chain" in str(refused.value) and "integrity.chain_id" in str(refused.value)
            await first.shutdown(5)  # releases the lease
            await second.start()
            assert second.stuck() == (False, "")
            await second.shutdown(5)
        finally:
            await es.close()

    asyncio.run(scenario())


def test_an_abandoned_lease_is_taken_over_after_its_ttl(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        es = AsyncElasticsearch(es_url, request_timeout=30, max_retries=0)
        try:
            # A receiver on another state directory that died holding the lease.
            dead = ChainLease(es, "test-chain", "another-state-dir", ttl_s=2)
            await dead.acquire()
            sealer = Sealer(es, integrity_config(tmp_path / "s", lease_ttl_s=2), private_key=KEY)
            with pytest.raises(ChainInUse):
                await sealer.start()
            await asyncio.sleep(2.5)
            sealer = Sealer(es, integrity_config(tmp_path / "s", lease_ttl_s=2), private_key=KEY)
            await sealer.start()
            # The dead holder, had it only been paused, finds it lost the lease.
            with pytest.raises(ChainInUse, match="took over"):
                await dead.renew()
            await sealer.shutdown(5)
        finally:
            await es.close()

    asyncio.run(scenario())


def test_a_restart_on_its_own_state_dir_takes_its_lease_back_at_once(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    ids = asyncio.run(ingest(es_url, state, KEY, [10], lease_ttl_s=3600))
    # As if that run was killed: its lease is back in place, live for an hour.
    lease = clean_es.search(index=CHAIN_LEASES_INDEX, size=10)["hits"]["hits"]
    assert lease == []  # a clean shutdown released it
    own = (state / "state_id").read_text().strip()

    async def plant() -> None:
        es = AsyncElasticsearch(es_url, request_timeout=30, max_retries=0)
        try:
            await ChainLease(es, "test-chain", own, ttl_s=3600).acquire()
        finally:
            await es.close()

    asyncio.run(plant())
    ids += asyncio.run(ingest(es_url, state, KEY, [10], start=50, lease_ttl_s=3600))
    report = run_verify(clean_es, state, [KEY], chain_id="test-chain")
    assert report.ok and report.events_checked == len(ids), report.to_json_dict()


def test_a_sealer_that_loses_its_lease_stops_and_says_so(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        es = AsyncElasticsearch(es_url, request_timeout=30, max_retries=0)
        sealer = Sealer(es, integrity_config(tmp_path / "s", lease_ttl_s=1.5), private_key=KEY)
        try:
            await sealer.start()
            # Someone replaces the lease document (another receiver after a long pause).
            await es.index(
                index=CHAIN_LEASES_INDEX,
                id="test-chain",
                document={
                    "chain_id": "test-chain",
                    "holder": "x",
                    "state_id": "y",
                    "host": "h",
                    "pid": 1,
                    "heartbeat_ms": 0,
                    "expires_ms": 0,
                },
                refresh=True,
            )
            for _ in range(40):
                stuck, why = sealer.stuck()
                if stuck:
                    break
                await asyncio.sleep(0.1)
            assert stuck and "took over the lease" in why
            await sealer.shutdown(2)
        finally:
            await es.close()

    asyncio.run(scenario())
