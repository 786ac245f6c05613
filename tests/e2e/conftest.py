"""Fixtures for the end-to-end tests: the real ``otel-audit serve`` as a subprocess.

``start_receiver()`` runs the receiver the way an operator does (command line, a YAML file
for what only YAML can hold, ``OTEL_AUDIT_*`` variables for the rest) on free local
ports, with its spool, integrity state, checkpoints and signing key under ``tmp_path``.
The returned :class:`ReceiverProcess` can be stopped with SIGTERM and started again on
the same ports and directories, which is how the outage test takes the receiver away
from under the Collector. The Collector fixtures come from ``tests/collector/conftest.py``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from indexer.local_es.node import free_port as local_es_free_port
from indexer.query.auth import hash_token
from otel_audit.integrity.keys import generate_private_key, write_key_pair

# The Collector fixtures live beside the Collector tests; the e2e tests use the same ones.
from tests.collector.conftest import collector_binary, start_collector  # noqa: F401
from tests.support.child_process import answers_200, log_tail, stop_child
from tests.support.collector_build import free_port

_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ReceiverProcess:
    """One ``otel-audit serve`` subprocess with fixed ports and directories."""

    work_dir: Path
    es_url: str
    reader_token: str = field(default_factory=lambda: "e2e_" + secrets.token_urlsafe(24))
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    query_port: int = field(default_factory=free_port)
    extra_config: dict[str, Any] = field(default_factory=dict)
    """More YAML sections (``tls``, ``writers``); with ``tls``, readiness is read from a
    plaintext loopback admin listener, since the others want a client certificate."""
    admin_port: int = field(default_factory=free_port)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # Each port was drawn on its own: two of them can be the same free port.
        taken: set[int] = set()
        for name in ("grpc_port", "http_port", "query_port", "admin_port"):
            port = getattr(self, name)
            if port in taken:
                port = local_es_free_port(taken=taken)
                setattr(self, name, port)
            taken.add(port)

    @property
    def grpc_endpoint(self) -> str:
        """``host:port`` of the receiver's OTLP gRPC server (the Collector's target)."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def query_url(self) -> str:
        """Base URL of the query API."""
        return f"http://127.0.0.1:{self.query_port}"

    @property
    def log_path(self) -> Path:
        """The receiver's JSON log (stdout and stderr)."""
        return self.work_dir / "receiver.log"

    def _write_files(self) -> Path:
        """The signing key (once) and the YAML file; returns the config path."""
        keys = self.work_dir / "keys"
        if not (keys / "signing-key.pem").exists():
            write_key_pair(generate_private_key(), keys)
        config = self.work_dir / "receiver.yaml"
        # Tokens are a list of mappings, which the environment cannot express.
        query = {"tokens": [{"subject": "e2e-auditor", "sha256": hash_token(self.reader_token)}]}
        config.write_text(yaml.safe_dump({"query": query, **self.extra_config}), encoding="utf-8")
        return config

    def environment(self) -> dict[str, str]:
        """Every setting the test cares about, as the operator would set it."""
        return {
            **os.environ,
            "OTEL_AUDIT_ES_URL": self.es_url,
            "OTEL_AUDIT_GRPC_ENDPOINT": self.grpc_endpoint,
            "OTEL_AUDIT_HTTP_ENDPOINT": f"127.0.0.1:{self.http_port}",
            "OTEL_AUDIT_QUERY_API_ENDPOINT": f"127.0.0.1:{self.query_port}",
            "OTEL_AUDIT_SPOOL_DIR": str(self.work_dir / "spool"),
            "OTEL_AUDIT_SHUTDOWN_TIMEOUT_S": "10",
            "OTEL_AUDIT_LOG_LEVEL": "info",
            "OTEL_AUDIT_INTEGRITY__KEY_FILE": str(self.work_dir / "keys" / "signing-key.pem"),
            "OTEL_AUDIT_INTEGRITY__GENERATE_DEV_KEY": "false",
            "OTEL_AUDIT_INTEGRITY__STATE_DIR": str(self.work_dir / "integrity"),
            "OTEL_AUDIT_INTEGRITY__CHECKPOINT_DIR": str(self.work_dir / "checkpoints"),
            "OTEL_AUDIT_INTEGRITY__BLOCK_MAX_INTERVAL_MS": "200",
            "OTEL_AUDIT_ADMIN_ENDPOINT": f"127.0.0.1:{self.admin_port}",
        }

    def start(self, timeout_s: float = 60.0) -> None:
        """Start ``otel-audit serve`` and return once it is ready and its query API answers."""
        if self._proc is not None:
            raise RuntimeError("this receiver is already running")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_files()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "otel_audit.cli", "serve", "--config", str(config)],
                cwd=_REPO_ROOT,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        urls: tuple[str, ...] = (
            f"http://127.0.0.1:{self.http_port}/readyz",
            f"{self.query_url}/api/v1/healthz",
        )
        if "tls" in self.extra_config:
            urls = (f"http://127.0.0.1:{self.admin_port}/readyz",)
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise RuntimeError(f"otel-audit serve exited with {code}:\n{self.log_tail()}")
            if all(answers_200(url, timeout_s=2.0) for url in urls):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"otel-audit serve not ready after {timeout_s:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout_s``); the exit code, None if not running."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        return stop_child(proc, timeout_s)

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the receiver's log."""
        return log_tail(self.log_path, lines)


StartReceiver = Callable[[], ReceiverProcess]


@pytest.fixture
def start_receiver(es_url: str, tmp_path: Path) -> Iterator[StartReceiver]:
    """Factory: ``start_receiver()`` runs one ``otel-audit serve``; stopped at teardown."""
    started: list[ReceiverProcess] = []

    def start() -> ReceiverProcess:
        receiver = ReceiverProcess(work_dir=tmp_path / f"receiver-{len(started)}", es_url=es_url)
        started.append(receiver)
        receiver.start()
        return receiver

    yield start
    for receiver in started:
        receiver.stop()
