"""Fixtures of the ingest tests: valid audit records and a consumer on the real Elasticsearch."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from otel_audit.record import LogRecordData
from receiver.ingest import IngestConsumer, IngestSettings, Sealer
from receiver.spool import Spool

RecordFactory = Callable[..., LogRecordData]


def audit_record(n: int = 0, *, event_id: str | None = None, **attrs: Any) -> LogRecordData:
    """A valid audit record; ``attrs`` override or (with None) remove attributes."""
    base: dict[str, Any] = {
        "audit.action": "invoice.update",
        "audit.category": "data_change",
        "audit.outcome": "success",
        "audit.actor.id": f"user-{n}",
        "audit.actor.type": "user",
        "audit.resource.type": "invoice",
        "audit.resource.id": f"inv-{n}",
        "audit.event.id": event_id or str(uuid.uuid4()),
    }
    for key, value in attrs.items():
        name = key.replace("__", ".")
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return LogRecordData(
        attributes=base,
        resource={"service.name": "billing"},
        time_unix_nano=time.time_ns(),
        body=f"invoice inv-{n} updated",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
    )


@pytest.fixture
def make_record() -> RecordFactory:
    """Factory of valid audit records (see :func:`audit_record`)."""
    return audit_record


ConsumerFactory = Callable[..., IngestConsumer]


@pytest.fixture
def make_consumer(es_url: str, tmp_path: Path) -> ConsumerFactory:
    """Build (not start) a consumer on the session node with a spool under tmp_path.

    ``client`` replaces the Elasticsearch client (fault-injecting wrappers); other keywords
    are :class:`IngestSettings` fields.
    """

    def build(
        client: Any = None,
        *,
        sealer: Sealer | None = None,
        spool_dir: Path | None = None,
        **kw: Any,
    ) -> IngestConsumer:
        settings = IngestSettings(
            spool_dir=str(spool_dir or tmp_path / "spool"),
            **{"es_url": es_url, "bulk_flush_interval_ms": 2.0, **kw},
        )
        es = client or AsyncElasticsearch(
            settings.es_url,
            request_timeout=settings.bulk_timeout_s,
            retry_on_timeout=False,
            max_retries=0,
        )
        spool = Spool(
            settings.spool_dir, settings.spool_max_bytes, retry_after_s=settings.retry_after_s
        )
        return IngestConsumer(es, spool, settings, sealer=sealer, close_client=True)

    return build
