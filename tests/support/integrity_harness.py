"""Helpers of the integrity tests: ingest through the real write path with a sealer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from elasticsearch import AsyncElasticsearch, Elasticsearch

from indexer.integrity.checkpoint_store import DirectoryCheckpointStore
from indexer.integrity.verify import VerifyOptions, VerifyReport, verify
from otel_audit.integrity import Ed25519PrivateKey, Keyring
from receiver.ingest.consumer import IngestConsumer, IngestSettings
from receiver.ingest.spool import Spool
from receiver.sealing.config import IntegrityConfig
from receiver.sealing.sealer import Sealer
from tests.receiver.conftest import audit_record


def integrity_config(state: Path, **kw: Any) -> IntegrityConfig:
    values: dict[str, Any] = {
        "state_dir": str(state),
        "checkpoint_dir": str(state / "checkpoints"),
        "block_max_events": 50,
        "block_max_interval_ms": 50,
        "heartbeat_interval_s": 3600.0,
        "chain_id": "test-chain",
    }
    values.update(kw)
    return IntegrityConfig(**values)


def sealed_consumer(
    es: AsyncElasticsearch,
    es_url: str,
    state: Path,
    key: Ed25519PrivateKey,
    settings: dict[str, Any] | None = None,
    **config: Any,
) -> tuple[Sealer, IngestConsumer]:
    """A sealer (``integrity_config(state, **config)``) behind the real ingest consumer,
    spooling under ``state``; the consumer closes ``es`` at shutdown."""
    sealer = Sealer(es, integrity_config(state, **config), private_key=key)
    consumer = IngestConsumer(
        es,
        Spool(str(state / "spool"), 64 * 1024 * 1024),
        IngestSettings(es_url=es_url, spool_dir=str(state / "spool"), **(settings or {})),
        sealer=sealer,
        close_client=True,
    )
    return sealer, consumer


async def ingest(
    es_url: str,
    state: Path,
    key: Ed25519PrivateKey,
    batches: list[int],
    *,
    start: int = 0,
    **config: Any,
) -> list[str]:
    """Ingest ``batches`` of records (one consume_logs each), seal all; returns event ids."""
    es = AsyncElasticsearch(es_url, request_timeout=30, max_retries=0)
    sealer, consumer = sealed_consumer(
        es, es_url, state, key, {"bulk_flush_interval_ms": 2}, **config
    )
    await consumer.start()
    ids: list[str] = []
    n = start
    try:
        for size in batches:
            records = [audit_record(n + i) for i in range(size)]
            n += size
            result = await consumer.consume_logs(records)
            assert result.accepted == size, result
            ids.extend(r.attributes["audit.event.id"] for r in records)
        await sealer.force_flush()
    finally:
        await consumer.shutdown(10)
    return ids


def run_verify(
    es: Elasticsearch, state: Path, keys: list[Ed25519PrivateKey], **kw: Any
) -> VerifyReport:
    es.indices.refresh(index="audit-*")
    ring = Keyring(k.public_key() for k in keys)
    store = DirectoryCheckpointStore(state / "checkpoints")
    kw.setdefault("grace_s", 0.0)
    return verify(es, ring, store, VerifyOptions(**kw))


def kinds(report: VerifyReport) -> dict[str, int]:
    return report.counts()


def run(coro: Any) -> Any:
    return asyncio.run(coro)
