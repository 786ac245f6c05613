"""``otel-audit serve`` runs the lifecycle on its schedule and exports its metrics; the
``hold``, ``lifecycle run`` and ``restore`` commands record what they do, through the
running receiver (OTLP) or, with none running, an ingest of their own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from indexer.local_es.state import wipe_project_state
from indexer.local_s3 import LocalS3, LocalS3Config
from indexer.templates import install_templates
from receiver.config import load_config
from tests.indexer.lifecycle.verify_helpers import verify_es
from tests.support.lifecycle_harness import (
    Ingest,
    day_name,
    day_start_ms,
    free_port,
    lifecycle_events,
    records_on,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.lifecycle]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[LocalS3]:
    base = LocalS3Config.from_env()
    config = LocalS3Config(
        url=f"http://127.0.0.1:{free_port()}", cache_dir=base.cache_dir, data_dir=tmp_path / "s3"
    )
    with LocalS3(config=config) as server:
        yield server


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "otel_audit.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _wait(what: str, check: object, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_serve_archives_on_schedule_and_commands_record_their_actions(
    es: Elasticsearch, s3: LocalS3, tmp_path: Path
) -> None:
    wipe_project_state(es)
    install_templates(es)
    url = str(es.transport.node_pool.get().base_url)
    path = write_config(tmp_path, url, s3, interval_s=1.0)
    config = load_config(path)
    old = day_start_ms(40)
    with Ingest(config) as ingest:
        ingest.store(records_on(old, 30))
        ingest.seal()

    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_audit.cli", "serve", "--config", str(path),
         "--grpc-endpoint", "127.0.0.1:0"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=log, text=True,
    )  # fmt: skip
    try:
        index = f"audit-events-{day_name(old)}"
        _wait("the schedule to archive the old day", lambda: not es.indices.exists(index=index))
        metrics_url = f"http://{config.http_endpoint}/metrics"

        def archived_metric() -> bool:
            text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
            return "otel_audit_receiver_lifecycle_archived_days 1.0" in text

        _wait("the lifecycle metrics", archived_metric)
        text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
        assert 'otel_audit_receiver_lifecycle_runs_total{outcome="ok"}' in text
        assert "otel_audit_receiver_lifecycle_last_run_timestamp_seconds" in text
        assert "otel_audit_receiver_lifecycle_oldest_hot_day_timestamp_seconds" in text

        # With the receiver running, the commands record through it (OTLP).
        added = _cli("hold", "add", "--config", str(path), "--reason", "case 9",
                     "--actor", "user-1", "--id", "case-9", "--by", "legal", "--json")  # fmt: skip
        assert added.returncode == 0, added.stderr
        listed = json.loads(_cli("hold", "list", "--config", str(path), "--json").stdout)
        assert [h["id"] for h in listed["holds"]] == ["case-9"]
        released = _cli("hold", "release", "case-9", "--config", str(path), "--by", "legal")
        assert released.returncode == 0, released.stderr
        dry = _cli("lifecycle", "run", "--config", str(path), "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["dry_run"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]

    # No receiver running: restore records through an ingest of its own.
    day = day_name(old).replace(".", "-")
    restored = _cli("restore", "--config", str(path), "--from", day, "--to", day, "--by", "auditor",
                    "--json")  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["restored"] == {day_name(old): 30}
    actions = {e["event"]["action"] for e in lifecycle_events(es)}
    assert {
        "audit_log.archive",
        "audit_log.index_delete",
        "audit_log.hold_add",
        "audit_log.hold_release",
        "audit_log.restore",
    } <= actions
    report = verify_es(es, tmp_path)
    assert report.ok, [f.message for f in report.findings[:5]]
