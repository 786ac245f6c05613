"""``otel-audit serve`` as a process: start, serve, SIGTERM drains in-flight work, exit 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from tests.support.front_harness import logs_request

REPO = Path(__file__).resolve().parents[2]


def _start(tmp_path: Path, consumer: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    config = tmp_path / "receiver.yaml"
    config.write_text(
        "grpc_endpoint: 127.0.0.1:0\n"
        "http_endpoint: 127.0.0.1:0\n"
        f"consumer: {consumer}\n"
        "spans_consumer: none\n"
        "shutdown_timeout_s: 10\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_audit.cli", "serve", "--config", str(config)],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        entry = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= entry.keys()
        if entry["msg"] == "receiver listening":
            return proc, entry["fields"]
    proc.kill()
    raise AssertionError(f"receiver did not start (exit {proc.wait()})")


def test_sigterm_finishes_in_flight_requests_and_exits_0(tmp_path: Path) -> None:
    proc, fields = _start(tmp_path, "tests.support.front_harness:build_slow_consumer")
    url = f"http://{fields['http']}/v1/logs"
    body = logs_request(3).SerializeToString()
    headers = {"Content-Type": "application/x-protobuf"}
    answers: list[int] = []
    try:
        slow = threading.Thread(
            target=lambda: answers.append(
                requests.post(url, data=body, headers=headers, timeout=30).status_code
            )
        )
        slow.start()
        time.sleep(0.5)  # the consumer holds it for 1.5 s
        proc.send_signal(signal.SIGTERM)
        slow.join(30)
        assert answers == [200]
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.stderr is not None
    messages = [json.loads(line) for line in proc.stderr.read().splitlines()]
    stopped = [m for m in messages if m["msg"] == "receiver stopped"]
    assert stopped and stopped[0]["fields"]["drained"] is True


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("grpc_endpoint: 127.0.0.1:99999\n")
    result = subprocess.run(
        [sys.executable, "-m", "otel_audit.cli", "serve", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "bad.yaml" in result.stderr and "grpc_endpoint" in result.stderr


def test_check_config_prints_the_effective_config(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "otel_audit.cli", "serve", "--check-config", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "OTEL_AUDIT_BULK_MAX_DOCS": "77"},
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["bulk_max_docs"] == 77 and data["grpc_endpoint"] == "127.0.0.1:4317"
