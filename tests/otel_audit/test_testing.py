"""The test helpers services use: capture_audit_events and assert_audit_event."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from otel_audit import AuditLogger, _logs_compat, audit_event
from otel_audit.testing import CapturedAuditEvents, assert_audit_event, capture_audit_events

GOOD = {
    "action": "invoice.update",
    "category": "data_change",
    "outcome": "success",
    "actor_id": "u-1",
    "actor_type": "user",
    "resource_type": "invoice",
    "resource_id": "inv-1",
}


def test_capture_the_global_helper() -> None:
    tracer = TracerProvider().get_tracer("t")
    with capture_audit_events() as events:
        assert isinstance(events, CapturedAuditEvents)
        assert len(events) == 0
        with tracer.start_as_current_span("op") as span:
            eid = audit_event(**GOOD, **{"order.id": "o-1"})
        assert len(events) == 1  # live: no flush needed
    (event,) = events
    assert event.action == "invoice.update"
    assert event.outcome == "success"
    assert event.actor_id == "u-1"
    assert event.resource_id == "inv-1"
    assert event.event_id == eid
    assert event.actor_name is None
    assert event.trace_id == f"{span.get_span_context().trace_id:032x}"
    assert event.span_id == f"{span.get_span_context().span_id:016x}"
    assert event.attributes["order.id"] == "o-1"
    assert event.resource["service.name"] == "otel-audit-test"
    assert event.violations == [] and event.valid
    assert event.severity_text == "INFO"
    assert event.event_name == "invoice.update"
    with pytest.raises(AttributeError):
        _ = event.no_such_param
    assert_audit_event(events, action="invoice.update", actor_id="u-1", **{"order.id": "o-1"})


def test_events_after_the_block_are_not_captured() -> None:
    with capture_audit_events() as events:
        audit_event(**GOOD)
    audit_event(**GOOD)
    assert len(events) == 1


def test_nested_captures_restore_the_previous_one() -> None:
    with capture_audit_events() as outer:
        with capture_audit_events() as inner:
            audit_event(**GOOD)
        audit_event(**{**GOOD, "outcome": "failure"})
    assert [e.outcome for e in inner] == ["success"]
    assert [e.outcome for e in outer] == ["failure"]


def test_only_audit_events_are_captured() -> None:
    provider = _logs_compat.sdk_logger_provider({"service.name": "svc"})
    with capture_audit_events(provider) as events:
        provider.get_logger("app").emit(body="plain log line")
        AuditLogger(provider).emit(**GOOD)
    assert [e.action for e in events] == ["invoice.update"]
    assert events[0].resource["service.name"] == "svc"
    provider.shutdown()


def test_invalid_events_carry_violations(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), capture_audit_events() as events:
        audit_event(action="invoice.update", category="data_change", outcome="success")
    (event,) = events
    assert not event.valid
    assert {(v.field, v.rule) for v in event.violations} >= {("audit.actor.id", "required")}
    with pytest.raises(AssertionError, match=r"audit.actor.id \[required\]"):
        assert_audit_event(events, action="invoice.update")
    assert assert_audit_event(events, action="invoice.update", allow_violations=True) is event


def test_assert_failure_shows_a_diff() -> None:
    with capture_audit_events() as events:
        audit_event(**GOOD)
        audit_event(**{**GOOD, "action": "invoice.delete", "outcome": "denied"})
    with pytest.raises(AssertionError) as err:
        assert_audit_event(events, action="invoice.delete", outcome="success", actor_id="u-1")
    text = str(err.value)
    assert "no captured audit event matches (2 captured)" in text
    assert "outcome: expected 'success', got 'denied'" in text
    assert "'invoice.update', 'invoice.delete'" in text


def test_assert_with_nothing_captured() -> None:
    with capture_audit_events() as events:
        pass
    with pytest.raises(AssertionError, match="no audit events were captured"):
        assert_audit_event(events, action="x.y")


def test_clear() -> None:
    with capture_audit_events() as events:
        audit_event(**GOOD)
        events.clear()
        audit_event(**{**GOOD, "outcome": "failure"})
    assert [e.outcome for e in events] == ["failure"]
