"""A crash (SIGKILL) right after every step of the lifecycle, then a normal run: nothing is
lost, nothing is stored or recorded twice, the archive and the chain verify clean."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from indexer.lifecycle.verify_archive import verify_archive
from indexer.local_s3 import LocalS3
from receiver.config import load_config
from receiver.lifecycle import cold_store_of
from tests.indexer.lifecycle.verify_helpers import keyring, verify_es
from tests.support.lifecycle_harness import (
    Clock,
    Ingest,
    day_name,
    day_start_ms,
    lifecycle_events,
    records_on,
    run,
    runner,
)
from tests.support.lifecycle_harness import write_config as _write_config

pytestmark = [pytest.mark.integration, pytest.mark.lifecycle]

STEPS = [
    "exported",
    "uploaded:events.parquet",
    "uploaded:blocks.ndjson",
    "uploaded:checkpoints.ndjson",
    "manifest",
    "verified",
    "catalogued",
    "hot_record",
    "hot_event",
    "index_deleted",
    "purge_record",
    "purge_event",
    "purged",
]
ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_after_each_step_resumes_without_loss_or_duplicates(
    lifecycle_es: Elasticsearch, s3: LocalS3, tmp_path: Path, step: str
) -> None:
    es = lifecycle_es
    url = str(es.transport.node_pool.get().base_url)
    path = _write_config(tmp_path, url, s3, hot_days=30, retain_days=90, lease_ttl_s=10)
    config = load_config(path)
    gone, archived = day_start_ms(100), day_start_ms(40)
    with Ingest(config) as ingest:
        ingest.store(records_on(gone, 60) + records_on(archived, 40))
        ingest.seal()

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.lifecycle_child", str(path), step, "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -9, f"not killed at {step}: {proc.returncode}\n{proc.stderr[-3000:]}"

    # The dead runner's lease blocks everyone until it expires.
    clock = Clock()
    with Ingest(config) as ingest:
        blocked = runner(path, ingest.record, clock).run()
        assert "holds the lifecycle lease" in blocked.skipped
        clock.advance_s(11)
        run(runner(path, ingest.record, clock))
        ingest.seal()

    # The archive: the old day purged by a signed record, the other verified.
    store = cold_store_of(config)
    archive = verify_archive(store, keyring(tmp_path))
    assert archive.ok, archive.to_json_dict()
    assert {d.day: d.state for d in archive.days} == {
        day_name(gone): "purged",
        day_name(archived): "archived",
    }
    assert archive.days[1].events == 40

    # Elasticsearch: both days gone by policy, every event accounted for, chain clean.
    for day in (gone, archived):
        assert not es.indices.exists(index=f"audit-events-{day_name(day)}")
    result = verify_es(es, tmp_path)
    assert result.ok, [f.message for f in result.findings[:5]]
    assert result.events_archived == 100

    # Every action recorded exactly once (a repeated step sends an exact duplicate).
    actions = Counter(
        (e["event"]["action"], e["audit"]["resource"]["id"]) for e in lifecycle_events(es)
    )
    assert actions == Counter(
        {
            ("audit_log.archive", day_name(gone)): 1,
            ("audit_log.archive", day_name(archived)): 1,
            ("audit_log.index_delete", f"audit-events-{day_name(gone)}"): 1,
            ("audit_log.index_delete", f"audit-events-{day_name(archived)}"): 1,
            ("audit_log.purge", day_name(gone)): 1,
        }
    )
