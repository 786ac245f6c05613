"""SIGKILL the receiver between storing and sealing: after a restart every event is sealed once.

The receiver runs as ``otel-audit serve`` with a block interval far longer than the test, so
acknowledged events are durable in Elasticsearch and in the sealer's journal but in no
block when the process is killed. The restart seals them from the journal.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from indexer.indices import BLOCKS_INDEX
from indexer.integrity.checkpoint_store import DirectoryCheckpointStore
from indexer.integrity.verify import VerifyOptions, verify
from otel_audit import _logs_compat
from otel_audit.emit import AuditLogger
from otel_audit.integrity import Keyring, generate_private_key, write_key_pair

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
KEY = generate_private_key()
LONG_MS = 3_600_000


@dataclass
class Site:
    """Directories and settings one receiver keeps across its restarts."""

    root: Path
    es_url: str
    key_file: Path

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    def config(self, block_interval_ms: int) -> Path:
        path = self.root / f"receiver-{block_interval_ms}.yaml"
        path.write_text(
            "grpc_endpoint: 127.0.0.1:0\n"
            "http_endpoint: 127.0.0.1:0\n"
            "query_api_endpoint: 127.0.0.1:0\n"
            f"es_url: {self.es_url}\n"
            f"spool_dir: {self.root / 'spool'}\n"
            "spans_consumer: none\n"
            "bulk_flush_interval_ms: 5\n"
            "shutdown_timeout_s: 10\n"
            "integrity:\n"
            f"  key_file: {self.key_file}\n"
            f"  state_dir: {self.state_dir}\n"
            f"  checkpoint_dir: {self.checkpoint_dir}\n"
            "  chain_id: crash-chain\n"
            "  block_max_events: 100000\n"
            f"  block_max_interval_ms: {block_interval_ms}\n"
            "  heartbeat_interval_s: 3600\n"
        )
        return path


class Receiver:
    """``otel-audit serve`` as a child process; its JSON log goes to a file, not a pipe
    (a pipe nobody drains would stall the receiver once full)."""

    def __init__(self, site: Site, block_interval_ms: int, name: str) -> None:
        self.log_path = site.root / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_AUDIT_")}
        config = site.config(block_interval_ms)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "otel_audit.cli", "serve", "--config", str(config)],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        self.http = self._wait_for("receiver listening")["fields"]["http"]

    def log(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def _wait_for(self, msg: str, timeout_s: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for entry in self.log():
                if entry.get("msg") == msg:
                    return entry
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"no {msg!r} from the receiver:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


class _Recording:
    """The SDK's OTLP/HTTP exporter, keeping each export's result and size."""

    def __init__(self, endpoint: str) -> None:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        self._inner = OTLPLogExporter(endpoint=endpoint, timeout=30)
        self.results: list[tuple[Any, int]] = []

    def export(self, batch: Sequence[Any]) -> Any:
        result = self._inner.export(batch)
        self.results.append((result, len(batch)))
        return result

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self._inner.shutdown()  # type: ignore[no-untyped-call]


def send(receiver: Receiver, n: int, start: int = 0) -> list[str]:
    """Emit ``n`` audit events through the SDK; returns their ids once all are acknowledged."""
    exporter = _Recording(f"http://{receiver.http}/v1/logs")
    provider = _logs_compat.sdk_logger_provider({"service.name": "billing"})
    provider.add_log_record_processor(
        _logs_compat.batch_processor(exporter, schedule_delay_millis=50)
    )
    audit = AuditLogger(provider)
    ids = [
        audit.emit(
            action="invoice.update",
            category="data_change",
            outcome="success",
            actor_id=f"user-{i}",
            actor_type="user",
            resource_type="invoice",
            resource_id=f"inv-{i}",
        )
        for i in range(start, start + n)
    ]
    assert provider.force_flush(60_000)
    provider.shutdown()
    assert sum(size for _, size in exporter.results) == n
    # LogExportResult or LogRecordExportResult, depending on the SDK release.
    assert all(r.name == "SUCCESS" for r, _ in exporter.results), exporter.results
    return ids


def block_ids(es: Elasticsearch) -> list[list[str]]:
    """Event ids of every block record of the chain, in sequence order."""
    if not es.indices.exists(index=BLOCKS_INDEX):
        return []
    es.indices.refresh(index=BLOCKS_INDEX)
    hits = es.search(
        index=BLOCKS_INDEX,
        query={"term": {"chain_id": "crash-chain"}},
        sort=[{"sequence": "asc"}],
        size=1000,
        source_includes=["event_ids"],
    )["hits"]["hits"]
    return [h["_source"]["event_ids"] for h in hits]


def wait_sealed(es: Elasticsearch, ids: list[str], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sealed = {i for block in block_ids(es) for i in block}
        if sealed >= set(ids):
            return
        time.sleep(0.2)
    raise AssertionError(f"{len(set(ids) - sealed)} of {len(ids)} events never sealed")


def assert_sealed_once_and_clean(es: Elasticsearch, site: Site, ids: list[str]) -> None:
    counts = Counter(i for block in block_ids(es) for i in block)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, [i for i, c in counts.items() if c > 1][:5]
    es.indices.refresh(index="audit-*")
    report = verify(
        es,
        Keyring([KEY.public_key()]),
        DirectoryCheckpointStore(site.checkpoint_dir),
        VerifyOptions(chain_id="crash-chain", grace_s=0.0),
    )
    assert report.ok, report.to_json_dict()
    assert report.events_checked == len(ids)


@pytest.fixture
def site(clean_es: Elasticsearch, es_url: str, tmp_path: Path) -> Iterator[Site]:
    key_file = write_key_pair(KEY, tmp_path / "keys").private_key_path
    yield Site(tmp_path, es_url, key_file)


def test_kill_between_store_and_seal(clean_es: Elasticsearch, site: Site) -> None:
    first = Receiver(site, LONG_MS, "first")
    try:
        ids = send(first, 300)
        # Acknowledged means stored and journaled; the long block interval means unsealed.
        assert block_ids(clean_es) == []
    finally:
        first.kill()

    second = Receiver(site, 100, "second")
    try:
        # New events go behind the recovered ones in the same chain.
        ids += send(second, 50, start=1000)
        wait_sealed(clean_es, ids)
        assert any("stored before a restart" in e.get("msg", "") for e in second.log())
    finally:
        assert second.stop() == 0
    assert_sealed_once_and_clean(clean_es, site, ids)


def test_kill_between_block_write_and_state_save(clean_es: Elasticsearch, site: Site) -> None:
    first = Receiver(site, LONG_MS, "first")
    try:
        ids = send(first, 200)
    finally:
        first.kill()
    # The state as it was before the next receiver sealed: journal full, no block.
    before_seal = site.root / "state-before-seal"
    shutil.copytree(site.state_dir, before_seal)

    second = Receiver(site, 100, "second")
    try:
        wait_sealed(clean_es, ids)
    finally:
        second.kill()
    assert len(block_ids(clean_es)) == 1
    # Put back the local state from before that block: as if the receiver died after the
    # block reached Elasticsearch and the checkpoint store but before state.json was saved.
    shutil.rmtree(site.state_dir)
    shutil.copytree(before_seal, site.state_dir)

    third = Receiver(site, 100, "third")
    try:
        ids += send(third, 100, start=500)
        wait_sealed(clean_es, ids)
        assert any("adopted" in e.get("msg", "") for e in third.log())
    finally:
        assert third.stop() == 0
    assert_sealed_once_and_clean(clean_es, site, ids)
