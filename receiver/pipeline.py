"""The narrow interface between the OTLP servers and the ingest pipeline.

The servers decode requests into :class:`~otel_audit.record.LogRecordData` lists and hand
them to a :class:`LogsConsumer`. The consumer validates, normalizes and durably writes
them; when ``consume_logs`` returns, every accepted record is durable (in Elasticsearch or
in the fsynced spool). It raises a :class:`~receiver.errors.RetryableError` when it cannot
make them durable, so the client retries the whole request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from otel_audit.record import LogRecordData

__all__ = ["IngestResult", "LogsConsumer"]


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What became of one request's records."""

    accepted: int
    rejected: int
    error_message: str = ""
    """Names the first reasons when ``rejected > 0`` (for OTLP partial_success)."""


class LogsConsumer(Protocol):
    """Anything that takes decoded log records and makes the accepted ones durable."""

    async def consume_logs(self, records: list[LogRecordData]) -> IngestResult:
        """Validate and durably store ``records``; raise RetryableError if impossible."""
        ...
