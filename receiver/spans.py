"""The span store: the traces side of the receiver writes every span it is sent.

Spans are context for audit events, not evidence: a span Elasticsearch refuses is logged
and counted rather than failing the export (documents and template: :mod:`indexer.spans`).
Each document's ``_id`` is ``<trace_id>-<span_id>`` written with ``op_type=create``, so an
exporter's retry of the same batch stores nothing twice.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from indexer.es_client import EsConnection, async_client
from indexer.indices import SPANS_TEMPLATE, span_index
from indexer.mappings import TemplateSettings
from indexer.spans import SpansConfig, build_span_document, spans_template
from otel_audit.span_record import SpanData
from receiver.errors import Unavailable

__all__ = ["SpansConsumer", "build_spans_consumer"]

_log = logging.getLogger(__name__)


class SpansConsumer:
    """Stores decoded spans; the traces side of the receiver hands every export here.

    ``es`` is an ``elasticsearch.AsyncElasticsearch`` client.
    """

    def __init__(
        self, es: Any, config: SpansConfig | None = None, *, close_client: bool = False
    ) -> None:
        self._es = es
        self.config = config or SpansConfig()
        self._close_client = close_client
        self._closed = False
        self.stored = 0
        self.failed = 0

    async def start(self) -> None:
        """Install the spans template; a node that is down now is not fatal here."""
        try:
            await self.ensure_template()
        except Exception as exc:
            _log.warning("spans template not installed yet", extra={"error": repr(exc)[:300]})

    async def force_flush(self) -> None:
        """Nothing is buffered: every call writes before it returns."""

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Close the client when this consumer made it (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._close_client:
            await self._es.close()

    async def ensure_template(self, settings: TemplateSettings | None = None) -> None:
        """Install the spans template with this config's retention (idempotent)."""
        from otel_audit.schema import load_schema

        body = spans_template(load_schema(), settings or TemplateSettings(), self.config)
        await self._es.indices.put_index_template(name=SPANS_TEMPLATE, **body)

    async def consume_spans(self, spans: list[SpanData]) -> int:
        """Store ``spans``; returns how many are now stored (new or already there).

        Spans without a trace or span id are skipped. Spans Elasticsearch refuses one by
        one are logged and counted as rejected; when Elasticsearch does not answer at all
        the export fails with :class:`~receiver.errors.Unavailable` so the client retries.
        """
        if not self.config.enabled or not spans:
            return 0
        lines: list[bytes] = []
        count = 0
        for span in spans:
            if not span.trace_id or not span.span_id:
                continue
            action = {
                "create": {
                    "_index": span_index(span.start_time_unix_nano, self.config.index_prefix),
                    "_id": f"{span.trace_id}-{span.span_id}",
                }
            }
            lines.append(orjson.dumps(action))
            lines.append(orjson.dumps(build_span_document(span)))
            count += 1
        if not count:
            return 0
        body = b"\n".join(lines) + b"\n"
        try:
            resp = await self._es.bulk(operations=body)
        except Exception as exc:
            self.failed += count
            _log.warning("span write failed", extra={"spans": count, "error": repr(exc)})
            # The exporter keeps the batch and retries: the trace view needs these spans.
            raise Unavailable("the span store is unavailable", retry_after_s=2.0) from exc
        ok = 0
        first_error: Any = None
        for item in resp.get("items", []):
            result = item.get("create", {})
            status = result.get("status", 500)
            if status in (200, 201, 409):
                ok += 1
            elif first_error is None:
                first_error = result.get("error")
        self.stored += ok
        if ok < count:
            self.failed += count - ok
            _log.warning(
                "some spans were not stored",
                extra={"spans": count, "stored": ok, "error": str(first_error)[:500]},
            )
        return ok


def build_spans_consumer(config: Any) -> SpansConsumer:
    """The span store for the receiver's configuration (its connection and ``spans``)."""
    sections = getattr(config, "sections", {}) or {}
    spans_config = sections.get("spans")
    if not isinstance(spans_config, SpansConfig):
        spans_config = SpansConfig()
    es = async_client(EsConnection.from_config(config), request_timeout=10, max_retries=0)
    return SpansConsumer(es, spans_config, close_client=True)
