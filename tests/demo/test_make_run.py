"""``make run`` end to end: the real receiver, the real Elasticsearch, the demo services."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from demo.run import run_demo
from tests.support.collector_build import free_port

pytestmark = pytest.mark.integration


def test_demo_stores_every_valid_event_and_dead_letters_the_invalid(
    es_url: str,
    es: Elasticsearch,
    clean_es: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OTEL_AUDIT_ES_URL", es_url)
    monkeypatch.setenv("OTEL_AUDIT_STATE_DIR", str(tmp_path / "state"))
    rc = run_demo(
        checkouts=19,
        keep_serving=False,
        grpc_port=free_port(),
        http_port=free_port(),
        query_port=free_port(),
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    # 19 checkouts: two carry deliberate violations (n = 3 and 18), two invalid events each.
    assert "sent 69 valid and 4 deliberately invalid audit events in 19 traces" in out
    assert "Stored audit events: 69 of 69 valid events sent (19 traces)" in out
    assert "Rejected records (dead-letter index audit-rejected-*): 4" in out
    assert "audit.outcome: 'ok' is not one of success, failure, denied, unknown" in out
    # The last block was written when the receiver stopped: searchable after a refresh.
    es.indices.refresh(index="audit-*")
    _run_printed_commands(out, es_url, tmp_path)
    es.indices.refresh(index="audit-*")
    by_service = es.search(
        index="audit-events-*",
        size=0,
        aggs={"s": {"terms": {"field": "service.name"}}},
    )["aggregations"]["s"]["buckets"]
    assert {b["key"] for b in by_service} == {"storefront", "billing", "inventory"}


def _printed(out: str, command: str) -> list[str]:
    line = next(ln.strip() for ln in out.splitlines() if ln.strip().startswith(command))
    return shlex.split(line)


def _run_printed_commands(out: str, es_url: str, tmp_path: Path) -> None:
    """`make run` prints how to verify its data; those exact commands succeed."""
    assert "/console/" in out
    env = {**os.environ, "OTEL_AUDIT_ES_URL": es_url}
    cli = [sys.executable, "-m", "otel_audit.cli"]
    verify = _printed(out, "otel-audit verify ")
    run = subprocess.run(
        [*cli, *verify[1:], "--grace-s", "0"], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "CLEAN" in run.stdout
    prove = _printed(out, "otel-audit prove ")
    bundle = tmp_path / "proof.json"
    run = subprocess.run(
        [*cli, "prove", prove[2], "--out", str(bundle)], env=env, capture_output=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    check = _printed(out, "otel-audit verify-proof ")
    run = subprocess.run(
        [*cli, "verify-proof", str(bundle), *check[3:]], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
