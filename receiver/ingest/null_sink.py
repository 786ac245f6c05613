"""Consumers that store nothing: for benchmarks and tests of the servers.

:class:`NullSink` does all the CPU work the ingest pipeline does before it talks to
Elasticsearch (validate, content hash, build the stored document, serialize it: in the
decoder for the records its ``native_plan`` covers) and then drops the result, so a
benchmark against it measures the receiver's own cost per event. With ``work=False`` it
accepts every record without looking at it (the servers' cost alone). Selected with
``consumer: null_sink`` or ``consumer: discard``; never for real data.
"""

from __future__ import annotations

import time
from typing import Any

from otel_audit.record import LogRecordData
from otel_audit.schema import load_schema
from otel_audit.span_record import SpanData
from otel_audit.validate import summarize, validate
from receiver.ingest.prepare import native_plan, prepare_in_python
from receiver.metrics import RECORDS_REJECTED
from receiver.pipeline import IngestResult

__all__ = ["NullSink", "build_discard_sink", "build_null_sink"]


class NullSink:
    """Validates and builds documents like the ingest pipeline, then discards them."""

    def __init__(self, *, work: bool = True) -> None:
        self.work = work
        self.native_plan = native_plan(load_schema(), leaf=False) if work else None
        """As the ingest pipeline's (without sealing): covered records arrive prepared."""
        self.accepted = 0
        self.rejected = 0
        self.spans = 0

    async def consume_logs(self, records: list[LogRecordData]) -> IngestResult:
        """Accept valid records (all of them when ``work`` is off)."""
        if not self.work:
            self.accepted += len(records)
            return IngestResult(accepted=len(records), rejected=0)
        schema = load_schema()
        now = time.time_ns()
        rejected = 0
        first = ""
        for record in records:
            if record.prepared is not None:
                continue  # validated, built and serialized by the decoder
            violations = validate(record, now_ns=now, schema=schema)
            if violations:
                rejected += 1
                if not first:
                    first = summarize(violations)
                RECORDS_REJECTED.labels("logs", violations[0].rule).inc()
                continue
            prepare_in_python(record, received_ns=now, schema=schema, leaf=False)
        accepted = len(records) - rejected
        self.accepted += accepted
        self.rejected += rejected
        message = f"{rejected} records rejected: {first}" if rejected else ""
        return IngestResult(accepted=accepted, rejected=rejected, error_message=message)

    async def reject_records(self, records: list[LogRecordData], reasons: list[str]) -> None:
        """Nothing to keep them in: count them."""
        self.rejected += len(records)

    async def consume_spans(self, spans: list[SpanData]) -> int:
        """Accept every span."""
        self.spans += len(spans)
        return len(spans)

    def ready(self) -> bool:
        """Always ready: there is nothing to wait for."""
        return True


def build_null_sink(config: Any) -> NullSink:
    """``consumer: null_sink``: the full CPU pipeline, nothing stored."""
    return NullSink(work=True)


def build_discard_sink(config: Any) -> NullSink:
    """``consumer: discard``: accept everything unseen."""
    return NullSink(work=False)
