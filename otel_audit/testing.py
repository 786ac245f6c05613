"""Assert a service's audit events in its own tests.

::

    from otel_audit.testing import assert_audit_event, capture_audit_events

    def test_update_is_audited():
        with capture_audit_events() as events:
            update_invoice("inv-1", user="u-1")
        assert_audit_event(events, action="invoice.update", outcome="success", actor_id="u-1")

:func:`capture_audit_events` records what the OpenTelemetry SDK itself produced (through an
in-memory exporter and a synchronous processor), so trace and span ids, resource, severity
and event name are the SDK's, and each captured event carries the schema's verdict.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, overload

from otel_audit import _logs_compat, emit
from otel_audit.record import LogRecordData
from otel_audit.schema import load_schema
from otel_audit.validate import Violation, validate

__all__ = [
    "CapturedAuditEvent",
    "CapturedAuditEvents",
    "assert_audit_event",
    "capture_audit_events",
]

_SCHEMA = load_schema()
_PARAM_TO_ATTRIBUTE = {f.param: f.attribute for f in _SCHEMA.fields}
_RECORD_KEYS = frozenset(
    {
        "trace_id",
        "span_id",
        "body",
        "severity_text",
        "severity_number",
        "event_name",
        "scope_name",
        "time_unix_nano",
    }
)
DEFAULT_RESOURCE = {"service.name": "otel-audit-test"}


@dataclass(frozen=True)
class CapturedAuditEvent:
    """One captured audit event: the record as the SDK produced it and its violations.

    Schema parameters read as attributes (``event.action``, ``event.actor_id``, ...; None
    when absent), as do ``trace_id``/``span_id`` (lowercase hex, "" without a span).
    """

    record: LogRecordData
    violations: list[Violation] = field(default_factory=list)

    @property
    def attributes(self) -> dict[str, Any]:
        """The record's attributes, keyed by wire name (``audit.actor.id``)."""
        return self.record.attributes

    @property
    def resource(self) -> dict[str, Any]:
        """The resource attributes of the provider that emitted it."""
        return self.record.resource

    @property
    def trace_id(self) -> str:
        return self.record.trace_id

    @property
    def span_id(self) -> str:
        return self.record.span_id

    @property
    def body(self) -> Any:
        return self.record.body

    @property
    def severity_text(self) -> str:
        return self.record.severity_text

    @property
    def severity_number(self) -> int:
        return self.record.severity_number

    @property
    def event_name(self) -> str:
        return self.record.event_name

    @property
    def valid(self) -> bool:
        """True when the schema found nothing wrong."""
        return not self.violations

    def __getattr__(self, name: str) -> Any:
        attribute = _PARAM_TO_ATTRIBUTE.get(name)
        if attribute is None:
            raise AttributeError(name)
        return self.record.attributes.get(attribute)

    def get(self, key: str) -> Any:
        """A schema parameter, record field (``trace_id``) or attribute (``order.id``)."""
        if key in _PARAM_TO_ATTRIBUTE:
            return self.record.attributes.get(_PARAM_TO_ATTRIBUTE[key])
        if key in _RECORD_KEYS:
            return getattr(self.record, key)
        return self.record.attributes.get(key)


class CapturedAuditEvents(Sequence[CapturedAuditEvent]):
    """A live, read-only list of the audit events captured so far (other logs are left out)."""

    def __init__(self, exporter: Any) -> None:
        self._exporter = exporter
        self._lock = threading.Lock()
        self._seen = 0
        self._events: list[CapturedAuditEvent] = []

    def _refresh(self) -> list[CapturedAuditEvent]:
        with self._lock:
            items = self._exporter.get_finished_logs()
            for item in items[self._seen :]:
                record = _logs_compat.readable_to_record(item)
                if _SCHEMA.marker_attribute not in record.attributes:
                    continue
                self._events.append(CapturedAuditEvent(record, validate(record, schema=_SCHEMA)))
            self._seen = len(items)
            return list(self._events)

    @overload
    def __getitem__(self, index: int) -> CapturedAuditEvent: ...
    @overload
    def __getitem__(self, index: slice) -> list[CapturedAuditEvent]: ...
    def __getitem__(self, index: int | slice) -> CapturedAuditEvent | list[CapturedAuditEvent]:
        return self._refresh()[index]

    def __len__(self) -> int:
        return len(self._refresh())

    def __iter__(self) -> Iterator[CapturedAuditEvent]:
        return iter(self._refresh())

    def __repr__(self) -> str:
        return f"CapturedAuditEvents({self._refresh()!r})"

    def clear(self) -> None:
        """Forget what was captured so far."""
        with self._lock:
            self._exporter.clear()
            self._seen = 0
            self._events.clear()


class _GatedExporter:
    """Passes records to the in-memory exporter only while the capture is open."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.open = True

    def export(self, batch: Any) -> Any:
        if self.open:
            return self.inner.export(batch)
        return self.inner.export([])

    def shutdown(self) -> None:
        self.open = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@contextmanager
def capture_audit_events(
    logger_provider: Any = None,
    *,
    resource: Mapping[str, Any] | None = None,
) -> Iterator[CapturedAuditEvents]:
    """Capture the audit events emitted inside the block.

    Without ``logger_provider`` a fresh SDK ``LoggerProvider`` (resource ``resource``,
    default ``service.name=otel-audit-test``) receives everything :func:`audit_event` emits
    inside the block; the global provider is left alone. With a provider (the one your
    service's :class:`~otel_audit.AuditLogger` uses), a synchronous processor is added to
    it; it stops capturing when the block ends (SDK providers cannot remove processors).
    """
    inner = _logs_compat.in_memory_exporter()
    gate = _GatedExporter(inner)
    processor = _logs_compat.simple_processor(gate)
    events = CapturedAuditEvents(inner)
    if logger_provider is not None:
        logger_provider.add_log_record_processor(processor)
        try:
            yield events
        finally:
            gate.open = False
        return
    provider = _logs_compat.sdk_logger_provider(DEFAULT_RESOURCE if resource is None else resource)
    provider.add_log_record_processor(processor)
    previous = emit._provider_override
    emit._provider_override = provider
    try:
        yield events
    finally:
        emit._provider_override = previous
        gate.open = False
        provider.shutdown()


def _differences(event: CapturedAuditEvent, expected: Mapping[str, Any]) -> dict[str, Any]:
    return {k: event.get(k) for k, v in expected.items() if event.get(k) != v}


def assert_audit_event(
    captured: Sequence[CapturedAuditEvent],
    *,
    allow_violations: bool = False,
    **expected: Any,
) -> CapturedAuditEvent:
    """Assert that one captured event matches ``expected``; return the first that does.

    Keys are schema parameters (``action``, ``actor_id``, ...), record fields (``trace_id``,
    ``span_id``, ``body``, ``severity_text``, ``event_name``) or attribute names
    (``**{"order.id": "o-1"}``). The matching event must also be valid unless
    ``allow_violations``. On failure the message shows, for the closest event, each
    expected value beside the captured one.
    """
    events = list(captured)
    if not events:
        raise AssertionError(f"no audit events were captured; expected {expected!r}")
    best: tuple[int, CapturedAuditEvent, dict[str, Any]] | None = None
    for event in events:
        diff = _differences(event, expected)
        if not diff and (allow_violations or event.valid):
            return event
        # An event with the expected action is the one the test author is looking for.
        score = 2 * len(diff) + (2 if "action" in diff else 0)
        score += 0 if allow_violations or event.valid else 1
        if best is None or score < best[0]:
            best = (score, event, diff)
    assert best is not None
    _, event, diff = best
    lines = [f"no captured audit event matches ({len(events)} captured); closest:"]
    for key, actual in diff.items():
        lines.append(f"  {key}: expected {expected[key]!r}, got {actual!r}")
    if not (allow_violations or event.valid):
        lines.append("  it breaks the schema:")
        lines.extend(f"    - {v.field} [{v.rule}]: {v.message}" for v in event.violations)
    lines.append("captured actions: " + ", ".join(repr(e.action) for e in events[:20]))
    raise AssertionError("\n".join(lines))
