"""The receiver watches itself: ``serve`` runs verify on a schedule against the real
Elasticsearch; tampering, a stale chain or a sealer that stopped sealing shows in
``/metrics`` and turns ``/readyz`` unready. Runs after the first read only what was written
since (tests/receiver/test_watch_changes.py: edits, inserts and deletes of old events)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from elasticsearch import Elasticsearch

from indexer.local_es.state import wipe_project_state
from indexer.templates import install_templates
from tests.support.front_harness import audit_attributes, logs_request
from tests.support.lifecycle_harness import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class Serve:
    def __init__(
        self,
        tmp: Path,
        es_url: str,
        *,
        chain: str = "",
        integrity: dict[str, object] | None = None,
        watch: dict[str, object] | None = None,
    ) -> None:
        self.chain = chain or f"watch-{uuid.uuid4().hex[:8]}"
        self.http = f"127.0.0.1:{free_port()}"
        self.state = tmp / "integrity-state"
        data = {
            "es_url": es_url,
            "spool_dir": str(tmp / "spool"),
            "grpc_endpoint": "127.0.0.1:0",
            "http_endpoint": self.http,
            "query_api_endpoint": "127.0.0.1:0",
            "spans_consumer": "none",
            "bulk_flush_interval_ms": 2.0,
            "integrity": {
                "state_dir": str(self.state),
                "chain_id": self.chain,
                "block_max_events": 50,
                "block_max_interval_ms": 50,
                "heartbeat_interval_s": 3600.0,
                "stuck_after_s": 3.0,
            },
            "lifecycle": {"enabled": False},
            "watch": {
                "enabled": True,
                "interval_s": 2.0,
                "first_delay_s": 0.5,
                "grace_s": 0.5,
                "max_wait_s": 1.0,
                "full_every": 4,
                **(watch or {}),
            },
        }
        data["integrity"].update(integrity or {})  # type: ignore[attr-defined]
        self.config = tmp / "receiver.yaml"
        self.config.write_text(yaml.safe_dump(data), encoding="utf-8")
        self.log_path = tmp / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otel_audit.cli", "serve", "--config", str(self.config)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        wait("the receiver to listen", lambda: "receiver listening" in self.log_path.read_text())

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            self.log.close()

    def send(self, start: int, n: int) -> None:
        body = logs_request([audit_attributes(i) for i in range(start, start + n)])
        req = urllib.request.Request(
            f"http://{self.http}/v1/logs",
            data=body.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200

    def ready(self) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.http}/readyz", timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def metric(self, name: str) -> float | None:
        with urllib.request.urlopen(f"http://{self.http}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        m = re.search(rf"^otel_audit_receiver_{re.escape(name)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else None

    def log_lines(self) -> list[dict[str, object]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(x) for x in lines if x.startswith("{")]


def wait(what: str, check: Callable[[], object], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def serve_factory(es: Elasticsearch, es_url: str, tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def make(**watch: object) -> Serve:
        wipe_project_state(es)
        install_templates(es)
        s = Serve(tmp_path, es_url, watch=watch)
        s.start()
        started.append(s)
        return s

    yield make
    for s in started:
        code = s.stop()
        assert code == 0, s.log_path.read_text()[-3000:]


@pytest.fixture
def serve(serve_factory: Callable[..., Serve]) -> Serve:
    return serve_factory()


def _clean_run_over(serve: Serve, events: int, *, incremental: bool = False) -> None:
    wait(
        f"a clean {'incremental' if incremental else 'full'} scheduled verify over {events} events",
        lambda: (
            serve.metric("verify_last_events_checked") == events
            and serve.metric("verify_last_incremental") == float(incremental)
            and serve.metric('verify_runs_total{outcome="clean"}')
            and serve.ready() == 200
        ),
    )


def test_scheduled_verify_is_incremental_and_finds_a_tampered_event(
    serve: Serve, es: Elasticsearch
) -> None:
    serve.send(0, 20)
    _clean_run_over(serve, 20)
    assert serve.metric("verify_last_run_timestamp_seconds")
    assert serve.metric("verify_stale") == 0.0
    assert serve.metric("verify_overdue") == 0.0
    # After a clean run the next ones read only the documents written since it began;
    # after three of them (watch.full_every 4) a run reads everything again.
    _clean_run_over(serve, 0, incremental=True)
    serve.send(20, 10)
    _clean_run_over(serve, 10, incremental=True)
    _clean_run_over(serve, 30)

    es.indices.refresh(index="audit-events-*")
    hit = es.search(index="audit-events-*", size=1)["hits"]["hits"][0]
    source = hit["_source"]
    source["event"]["outcome"] = "failure"
    es.index(index=hit["_index"], id=hit["_id"], document=source, refresh=True)

    # An event sealed before the last verified checkpoint: the next run finds it.
    wait("/readyz to turn unready", lambda: serve.ready() == 503, timeout_s=60)
    assert serve.metric('verify_findings{kind="modified"}') == 1.0
    assert serve.metric('verify_runs_total{outcome="findings"}')
    errors = [r for r in serve.log_lines() if r["msg"] == "tampering detected"]
    assert errors and errors[0]["level"] == "error"


def test_stuck_sealer_turns_readyz_unready(serve: Serve) -> None:
    serve.send(0, 10)
    _clean_run_over(serve, 10)
    assert serve.metric("sealing_stuck") == 0.0
    # The chain's checkpoint directory becomes a file: no checkpoint can be written, so
    # nothing more is sealed (the sealer fails closed and keeps the events pending).
    chain_dir = serve.state / "checkpoints" / serve.chain
    shutil.rmtree(chain_dir)
    chain_dir.write_text("not a directory\n")
    serve.send(10, 5)
    wait("/readyz to turn unready", lambda: serve.ready() == 503, timeout_s=60)
    wait("the sealing_stuck metric", lambda: serve.metric("sealing_stuck") == 1.0, timeout_s=30)
    assert any(r["msg"] == "sealing stuck" for r in serve.log_lines())


def test_stale_chain_turns_readyz_unready(serve_factory: Callable[..., Serve]) -> None:
    # The newest checkpoint may be 1 s old; the sealer heartbeats only every hour, so once
    # the events are sealed the chain goes stale, as verify (exit 4) would say.
    serve = serve_factory(stale_after_s=1.0)
    serve.send(0, 5)
    wait("/readyz to turn unready", lambda: serve.ready() == 503, timeout_s=60)
    wait("the verify_stale metric", lambda: serve.metric("verify_stale") == 1.0, timeout_s=30)
    # An incremental run that finds nothing new still judges the chain by its checkpoint.
    wait("an incremental run", lambda: serve.metric("verify_last_incremental") == 1.0)
    assert serve.metric("verify_stale") == 1.0
    assert serve.ready() == 503
    assert serve.metric("sealing_stuck") == 0.0
    assert not serve.metric('verify_runs_total{outcome="findings"}')
    assert any(r["msg"] == "chain stale" for r in serve.log_lines())


def test_serve_sends_checkpoints_to_a_witness(
    es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    from otel_audit.integrity import generate_private_key, write_key_pair
    from tests.indexer.integrity.test_witness import WitnessProcess

    wipe_project_state(es)
    install_templates(es)
    chain = f"watch-{uuid.uuid4().hex[:8]}"
    keys = write_key_pair(generate_private_key(), tmp_path / "keys")
    witness = WitnessProcess(tmp_path / "witness")
    witness.args[witness.args.index("--log") + 1] = f"{chain}={keys.public_key_path}"
    witness.start()
    serve = None
    try:
        assert witness.verifier is not None
        vkey = witness.verifier.vkey()
        (tmp_path / "receiver").mkdir()
        serve = Serve(
            tmp_path / "receiver",
            es_url,
            chain=chain,
            integrity={"key_file": str(keys.private_key_path), "generate_dev_key": False},
            watch={"witness_urls": [witness.url], "witness_keys": [vkey], "full_every": 1},
        )
        serve.start()
        serve.send(0, 30)
        _clean_run_over(serve, 30)
        wait(
            "a cosigned checkpoint",
            lambda: serve.metric('witness_submissions_total{outcome="cosigned"}'),
        )
        serve.send(30, 20)
        _clean_run_over(serve, 50)
        wait(
            "the second cosigned checkpoint",
            lambda: (serve.metric('witness_submissions_total{outcome="cosigned"}') or 0) >= 2,
        )
        checkpoints = serve.state / "checkpoints"
        verify = subprocess.run(
            [sys.executable, "-m", "otel_audit.cli", "verify", "--public-key",
             str(keys.public_key_path), "--checkpoint-dir", str(checkpoints), "--grace-s", "0",
             "--chain", chain, "--witness-key", vkey, "--es-url", es_url, "--json"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
        assert json.loads(verify.stdout)["witness"] == {"ok": True, "findings": []}
    finally:
        if serve is not None and serve.proc is not None:
            assert serve.stop() == 0, serve.log_path.read_text()[-3000:]
        witness.stop()
