"""Shared pieces of the query API tests: tokens, stored events, a running API.

The API runs for real on a free port with the real ingest consumer behind it (so query
audit events go through the normal pipeline into the real Elasticsearch).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
from elasticsearch import Elasticsearch

from indexer.indices import event_index
from indexer.query.api import start_query_api
from indexer.query.auth import hash_token
from indexer.query.config import QueryConfig, TokenEntry
from indexer.templates import install_templates
from otel_audit.document import build_document
from otel_audit.emit import event_id_at
from otel_audit.record import LogRecordData
from receiver.ingest.consumer import IngestConsumer, build_consumer

TOKENS = {
    "reader": "reader-token-0123456789",
    "stats": "stats-token-0123456789",
    "admin": "admin-token-0123456789",
}
SUBJECTS = {"reader": "alice", "stats": "dashboards", "admin": "root-ops"}


def api_config(
    es_url: str, extra_tokens: tuple[TokenEntry, ...] = (), **overrides: Any
) -> QueryConfig:
    tokens = tuple(
        TokenEntry(subject=SUBJECTS[role], sha256=hash_token(tok), roles=(role,))
        for role, tok in TOKENS.items()
    )
    return QueryConfig(
        endpoint="127.0.0.1:0", es_url=es_url, tokens=tokens + extra_tokens, **overrides
    )


def record(
    n: int,
    *,
    ts_ns: int | None = None,
    action: str = "invoice.update",
    actor: str | None = None,
    service: str = "billing",
    trace_id: str = "",
    span_id: str = "",
    body: str | None = None,
    outcome: str = "success",
    resource_type: str = "invoice",
    **attrs: Any,
) -> LogRecordData:
    """A valid audit record."""
    ts = ts_ns or time.time_ns()
    a: dict[str, Any] = {
        "audit.event.id": event_id_at(ts // 1_000_000),
        "audit.action": action,
        "audit.category": "data_change",
        "audit.outcome": outcome,
        "audit.actor.id": actor or f"user-{n % 7}",
        "audit.actor.type": "user",
        "audit.resource.type": resource_type,
        "audit.resource.id": f"{resource_type}-{n}",
    }
    a.update({k.replace("__", "."): v for k, v in attrs.items()})
    return LogRecordData(
        attributes=a,
        resource={"service.name": service},
        time_unix_nano=ts,
        observed_time_unix_nano=ts,
        body=body if body is not None else f"{action} by {a['audit.actor.id']}",
        trace_id=trace_id,
        span_id=span_id,
    )


def index_records(
    es: Elasticsearch, records: Iterable[LogRecordData], refresh: bool = True
) -> list[dict[str, Any]]:
    """Store records directly (as the ingest pipeline would), returning their documents."""
    docs: list[dict[str, Any]] = []
    lines: list[bytes] = []
    now = time.time_ns()
    for rec in records:
        doc = build_document(rec, received_ns=now)
        docs.append(doc)
        ts = rec.time_unix_nano
        lines.append(
            orjson.dumps({"create": {"_index": event_index(ts), "_id": doc["event"]["id"]}})
        )
        lines.append(orjson.dumps(doc))
        if len(lines) >= 10_000:
            _bulk(es, lines, False)
            lines = []
    if lines:
        _bulk(es, lines, False)
    if refresh:
        es.indices.refresh(index="audit-*")
    return docs


def _bulk(es: Elasticsearch, lines: list[bytes], refresh: bool) -> None:
    resp = es.bulk(operations=b"\n".join(lines) + b"\n", refresh=refresh)
    assert not resp["errors"], [i for i in resp["items"] if i["create"].get("error")][:3]


def prepare(es: Elasticsearch) -> None:
    """Templates in place (events, spans, ...)."""
    install_templates(es)


class Api:
    """A running query API with a real ingest consumer; use as ``async with``."""

    def __init__(self, es_url: str, tmp: Path, **overrides: Any) -> None:
        self.es_url = es_url
        self.tmp = tmp
        self.config = api_config(es_url, **overrides)
        self.consumer: IngestConsumer | None = None
        self.runner: Any = None
        self.session: aiohttp.ClientSession | None = None
        self.base = ""

    async def __aenter__(self) -> Api:
        self.consumer = build_consumer(
            SimpleNamespace(
                es_url=self.es_url, spool_dir=str(self.tmp / "spool"), bulk_flush_interval_ms=2
            )
        )
        await self.consumer.start()
        self.runner = await start_query_api(self.config, self.consumer.consume_logs)
        port = self.runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}/api/v1"
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None and self.consumer is not None
        await self.session.close()
        await self.runner.cleanup()
        await self.consumer.shutdown(5.0)

    async def get(
        self, path: str, role: str | None = "reader", token: str | None = None, params: Any = None
    ) -> tuple[int, Any, Any]:
        """(status, parsed JSON body, headers)."""
        assert self.session is not None
        headers = {}
        tok = token if token is not None else (TOKENS[role] if role else None)
        if tok is not None:
            headers["Authorization"] = f"Bearer {tok}"
        async with self.session.get(self.base + path, params=params, headers=headers) as resp:
            body = await resp.read()
            return resp.status, orjson.loads(body) if body else None, resp.headers
