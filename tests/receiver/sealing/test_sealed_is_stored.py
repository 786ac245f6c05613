"""What is sealed is what is stored: a crash between Elasticsearch's answer and the journal.

The first ``otel-audit serve`` SIGKILLs itself through the fault-injection hook right after
Elasticsearch confirmed a write and before the sealer journals it: the events are stored
but in no journal and no block, and the client never got an answer. The same request is
then sent again, byte for byte, as the Collector's retry would: the restarted receiver
finds every event already stored (409, same content hash) and must seal the document
Elasticsearch holds, not its own rebuilt copy with a later ``event.ingested``. Without
any retry, the restarted receiver seals them from the intent it logged before the write.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from otel_audit.integrity import write_key_pair
from receiver.ingest.seal_handoff import CRASH_AFTER_STORE_ENV
from tests.receiver.sealing.test_crash import (
    KEY,
    REPO,
    Receiver,
    Site,
    assert_sealed_once_and_clean,
    block_ids,
    wait_sealed,
)
from tests.support.front_harness import logs_request

pytestmark = pytest.mark.integration


@pytest.fixture
def site(clean_es: Elasticsearch, es_url: str, tmp_path: Path) -> Iterator[Site]:
    key_file = write_key_pair(KEY, tmp_path / "keys").private_key_path
    yield Site(tmp_path, es_url, key_file)


def post(http: str, body: bytes) -> int:
    req = urllib.request.Request(
        f"http://{http}/v1/logs",
        data=body,
        headers={"Content-Type": "application/x-protobuf"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return int(resp.status)


def crash_after_store(site: Site, body: bytes, ids: list[str], es: Elasticsearch) -> None:
    """Send ``body`` to a receiver that SIGKILLs itself after Elasticsearch stored it and
    before the journal write; the client gets no answer."""
    config = site.config(100)
    log_path = site.root / "crashing.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_AUDIT_")}
    env[CRASH_AFTER_STORE_ENV] = "1"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otel_audit.cli", "serve", "--config", str(config)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
        )
    try:
        http = ""
        deadline = time.monotonic() + 90
        while not http and time.monotonic() < deadline and proc.poll() is None:
            for line in log_path.read_text().splitlines():
                if '"receiver listening"' in line:
                    http = json.loads(line)["fields"]["http"]
            time.sleep(0.1)
        assert http, log_path.read_text()
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            post(http, body)
        assert proc.wait(30) == -9, "the fault hook did not kill the receiver"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    es.indices.refresh(index="audit-events-*")
    stored = es.count(index="audit-events-*", query={"ids": {"values": ids}})["count"]
    assert stored == len(ids), "the crash came after the write: every event is stored"
    assert block_ids(es) == []


def request_and_ids(n: int) -> tuple[bytes, list[str]]:
    request = logs_request(n)
    ids = [
        kv.value.string_value
        for lr in request.resource_logs[0].scope_logs[0].log_records
        for kv in lr.attributes
        if kv.key == "audit.event.id"
    ]
    return request.SerializeToString(), ids


def test_crash_between_store_and_journal_then_retry(clean_es: Elasticsearch, site: Site) -> None:
    body, ids = request_and_ids(200)
    crash_after_store(site, body, ids, clean_es)

    second = Receiver(site, 100, "second")
    try:
        assert post(second.http, body) == 200  # the Collector's retry of the same request
        wait_sealed(clean_es, ids)
    finally:
        assert second.stop() == 0
    clean_es.indices.refresh(index="audit-events-*")
    stored = clean_es.count(index="audit-events-*", query={"ids": {"values": ids}})["count"]
    assert stored == len(ids)
    assert max(Counter(i for b in block_ids(clean_es) for i in b).values()) == 1
    assert_sealed_once_and_clean(clean_es, site, ids)


def test_crash_between_store_and_journal_without_retry(clean_es: Elasticsearch, site: Site) -> None:
    """No client retries: the restarted receiver finds its own intent for the stored
    events, reads them back and seals what Elasticsearch holds."""
    body, ids = request_and_ids(200)
    crash_after_store(site, body, ids, clean_es)

    second = Receiver(site, 100, "second")
    try:
        wait_sealed(clean_es, ids, timeout_s=30)
        assert any("intended before a restart" in e.get("msg", "") for e in second.log())
    finally:
        assert second.stop() == 0
    assert max(Counter(i for b in block_ids(clean_es) for i in b).values()) == 1
    assert_sealed_once_and_clean(clean_es, site, ids)
