"""Nothing acknowledged is lost, nothing is stored twice: outages, a full spool, crashes.

These use the real Elasticsearch: the session node, plus one dedicated node that is
stopped and started in the middle of a stream of acknowledged batches.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from indexer.indices import EVENTS_ALIAS, REJECTED_ALIAS
from indexer.local_es import LocalElasticsearch
from otel_audit.emit import new_event_id
from receiver.errors import Unavailable
from receiver.ingest.consumer import IngestConsumer
from tests.receiver.conftest import ConsumerFactory, audit_record
from tests.support.collector_build import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def _stored_ids(es: Elasticsearch) -> list[str]:
    es.indices.refresh(index=EVENTS_ALIAS, ignore_unavailable=True)
    resp = es.search(
        index=EVENTS_ALIAS, size=10_000, source=False, sort=["_doc"], track_total_hits=True
    )
    ids = [h["_id"] for h in resp["hits"]["hits"]]
    assert resp["hits"]["total"]["value"] == len(ids), "more events than this check reads"
    return ids


def _rejected(es: Elasticsearch) -> int:
    es.indices.refresh(index=REJECTED_ALIAS, ignore_unavailable=True, allow_no_indices=True)
    return int(
        es.count(index=REJECTED_ALIAS, ignore_unavailable=True, allow_no_indices=True)["count"]
    )


def test_full_spool_answers_unavailable(make_consumer: ConsumerFactory, tmp_path: Path) -> None:
    consumer = make_consumer(
        es_url=f"http://127.0.0.1:{free_port()}", spool_max_bytes=48 * 1024, retry_after_s=3.0
    )

    async def go() -> tuple[int, Unavailable, bool]:
        await consumer.start()
        acked = 0
        try:
            for n in range(1000):
                try:
                    await consumer.consume_logs([audit_record(n * 10 + i) for i in range(10)])
                except Unavailable as exc:
                    return acked, exc, consumer.ready()
                acked += 1
            raise AssertionError("the spool never filled up")
        finally:
            await consumer.shutdown(5)

    acked, error, ready = asyncio.run(go())
    assert acked > 0
    assert error.retry_after_s == 3.0 and "spool is full" in str(error)
    assert not ready
    from receiver.ingest.spool import Spool

    spool = Spool(tmp_path / "spool", 48 * 1024)
    assert spool.open().frames == acked


# A receiver process in miniature: writes through the ingest consumer and prints the
# event ids of every acknowledged batch, until it is killed.
_WRITER = r"""
import asyncio, json, os, signal, sys, uuid
from otel_audit.emit import new_event_id
from tests.receiver.conftest import audit_record
from receiver.ingest.consumer import build_consumer, IngestSettings

mode, spool_dir, es_url = sys.argv[1:4]

class KillOnDurable:
    def on_durable(self, stored, created):
        # Elasticsearch has these events, the spool commit has not happened yet.
        print(json.dumps({"sealed": len(stored)}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

async def main():
    settings = IngestSettings(es_url=es_url, spool_dir=spool_dir, bulk_max_docs=50)
    consumer = build_consumer(settings, sealer=KillOnDurable() if mode == "replay" else None)
    await consumer.start()
    n = 0
    while mode == "spool":
        ids = [new_event_id() for _ in range(25)]
        await consumer.consume_logs([audit_record(n, event_id=e) for e in ids])
        print(json.dumps({"acked": ids}), flush=True)
        n += 1
    await asyncio.sleep(60)

asyncio.run(main())
"""


def _writer(mode: str, spool_dir: Path, es_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, mode, str(spool_dir), es_url],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_crash_with_spooled_batches_replays_exactly_once(
    clean_es: Elasticsearch, es_url: str, make_consumer: ConsumerFactory, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "crash-spool"
    # 1. Elasticsearch is unreachable: batches are acknowledged from the spool; then SIGKILL.
    proc = _writer("spool", spool_dir, f"http://127.0.0.1:{free_port()}")
    acked: set[str] = set()
    assert proc.stdout is not None
    for line in proc.stdout:
        acked.update(json.loads(line)["acked"])
        if len(acked) >= 40 * 25:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    # 2. Restart against Elasticsearch; die right after ES acknowledged the first replay,
    #    before the spool commit.
    proc = _writer("replay", spool_dir, es_url)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, out
    assert json.loads(out.splitlines()[-1])["sealed"] > 0
    first_pass = set(_stored_ids(clean_es))
    assert first_pass, "the first replay should have reached Elasticsearch"

    # 3. Restart again: the replay repeats what ES already has (409, same content).
    consumer = make_consumer(spool_dir=spool_dir)

    async def drain(c: IngestConsumer) -> bool:
        await c.start()
        try:
            return await c.wait_drained(60)
        finally:
            await c.shutdown(10)

    assert asyncio.run(drain(consumer))
    stored = _stored_ids(clean_es)
    assert len(stored) == len(set(stored)), "an event is stored twice"
    assert acked <= set(stored), f"{len(acked - set(stored))} acknowledged events are missing"
    assert first_pass <= set(stored)
    assert _rejected(clean_es) == 0, "a replay of the same content must not be a conflict"


@pytest.fixture
def own_node() -> Any:
    """A dedicated Elasticsearch node this test may stop and start."""
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix=f"otel-audit-es-{port}-"))
    node = LocalElasticsearch(url=f"http://127.0.0.1:{port}", data_dir=data, progress=None)
    node.ensure_started()
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(data, ignore_errors=True)


def test_elasticsearch_outage_mid_stream_loses_nothing(
    own_node: LocalElasticsearch, make_consumer: ConsumerFactory
) -> None:
    consumer = make_consumer(es_url=own_node.url, bulk_timeout_s=5.0)
    acked: list[str] = []
    phases: dict[str, int] = {}
    target = [0]

    async def producer(worker: int, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            if len(acked) >= target[0]:
                # Bounded volume per phase, however long the node takes to restart.
                await asyncio.sleep(0.02)
                continue
            ids = [new_event_id() for _ in range(10)]
            result = await consumer.consume_logs(
                [audit_record(worker * 100_000 + n, event_id=e) for e in ids]
            )
            assert result.accepted == 10
            acked.extend(ids)
            n += 1
            # A modest rate: the replay after the outage stays short on a busy machine.
            await asyncio.sleep(0.05)

    async def until(count: int, timeout_s: float = 120) -> None:
        target[0] = count
        deadline = time.monotonic() + timeout_s
        while len(acked) < count:
            assert time.monotonic() < deadline, f"only {len(acked)} of {count} acknowledged"
            await asyncio.sleep(0.02)

    async def go() -> bool:
        await consumer.start()
        stop = asyncio.Event()
        workers = [asyncio.create_task(producer(w, stop)) for w in range(2)]
        try:
            await until(200)
            await asyncio.to_thread(own_node.stop)
            phases["down"] = len(acked)
            await until(len(acked) + 200)
            assert consumer.spooling
            await asyncio.to_thread(own_node.ensure_started)
            phases["up"] = len(acked)
            await until(len(acked) + 200)
        finally:
            stop.set()
            await asyncio.gather(*workers)
        try:
            await consumer.force_flush()
            return await consumer.wait_drained(120)
        finally:
            await consumer.shutdown(10)

    assert asyncio.run(go())
    assert phases["up"] - phases["down"] >= 200, "batches kept being acknowledged while down"
    with Elasticsearch(own_node.url, request_timeout=30) as es:
        stored = _stored_ids(es)
        assert len(stored) == len(acked) == len(set(acked))
        assert set(stored) == set(acked)
        assert _rejected(es) == 0
