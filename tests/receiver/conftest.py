"""Fixtures of the ingest tests: valid audit records and a consumer on the real Elasticsearch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from otel_audit.record import LogRecordData
from receiver.ingest.consumer import IngestConsumer, IngestSettings, Sealer
from receiver.ingest.spool import Spool
from tests.support.front_harness import (
    CapturingConsumer,
    LiveReceiver,
    audit_attributes,
    front_config,
    running_receiver,
)

RecordFactory = Callable[..., LogRecordData]


def audit_record(n: int = 0, *, event_id: str | None = None, **attrs: Any) -> LogRecordData:
    """A valid audit record; ``attrs`` override or (with None) remove attributes."""
    base = audit_attributes(n)
    if event_id:
        base["audit.event.id"] = event_id
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
def consumer() -> CapturingConsumer:
    """A consumer that keeps what the OTLP servers hand it."""
    return CapturingConsumer()


@pytest.fixture
def live(consumer: CapturingConsumer) -> Iterator[LiveReceiver]:
    """Both OTLP servers running on free ports with small limits, feeding ``consumer``."""
    config = front_config(max_request_bytes=64 * 1024, max_inflight_bytes=256 * 1024)
    with running_receiver(consumer, config) as live:
        yield live


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
