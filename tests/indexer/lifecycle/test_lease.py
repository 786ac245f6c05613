"""Two receivers never run the lifecycle at once: the lease in the real Elasticsearch."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from indexer.lifecycle.lease import Lease, LeaseLost
from indexer.local_s3 import LocalS3
from receiver.config import load_config
from tests.support.lifecycle_harness import (
    Clock,
    Ingest,
    day_start_ms,
    records_on,
    runner,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.lifecycle]


def test_a_live_lease_excludes_an_expired_one_is_taken_over_once(
    lifecycle_es: Elasticsearch,
) -> None:
    es = lifecycle_es
    clock = Clock()
    a = Lease(es, "receiver-a", 60, clock)
    b = Lease(es, "receiver-b", 60, clock)
    assert a.acquire()
    assert not b.acquire()
    assert b.holder.startswith("receiver-a/")
    a.renew()

    # A dies; after the TTL many contenders race for the expired lease: one wins.
    clock.advance_s(61)
    contenders = [Lease(es, f"receiver-{i}", 60, clock) for i in range(8)]
    barrier = threading.Barrier(len(contenders))

    def take(lease: Lease) -> bool:
        barrier.wait()
        return lease.acquire()

    with ThreadPoolExecutor(len(contenders)) as pool:
        won = list(pool.map(take, contenders))
    assert won.count(True) == 1
    # The old holder finds out at its next renewal and stops.
    with pytest.raises(LeaseLost):
        a.renew()
    winner = contenders[won.index(True)]
    winner.release()
    assert b.acquire()


def test_two_receivers_run_the_lifecycle_one_at_a_time(
    lifecycle_es: Elasticsearch, s3: LocalS3, tmp_path: Path
) -> None:
    es = lifecycle_es
    path = write_config(tmp_path, str(es.transport.node_pool.get().base_url), s3)
    config = load_config(path)
    with Ingest(config) as ingest:
        ingest.store(records_on(day_start_ms(60), 50))
        ingest.seal()
        first_is_working = threading.Event()
        second_done = threading.Event()
        active = []

        def slow_step(step: str, day: str) -> None:
            active.append("a")
            if step == "exported":
                first_is_working.set()
                assert second_done.wait(60)

        def second() -> None:
            assert first_is_working.wait(60)
            try:
                report = runner(
                    path, ingest.record, Clock(), on_step=lambda *_: active.append("b")
                ).run()
                results["b"] = report
            finally:
                second_done.set()

        results: dict[str, object] = {}
        thread = threading.Thread(target=second)
        thread.start()
        results["a"] = runner(path, ingest.record, Clock(), on_step=slow_step).run()
        thread.join(60)
    a, b = results["a"], results["b"]
    assert "holds the lifecycle lease" in b.skipped  # type: ignore[attr-defined]
    assert not a.skipped and a.ok  # type: ignore[attr-defined]
    assert "b" not in active
