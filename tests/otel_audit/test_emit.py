"""The emit helper against the real OpenTelemetry SDK (in-memory exporter)."""

from __future__ import annotations

import inspect
import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import otel_audit
from otel_audit import _logs_compat, emit
from otel_audit.emit import (
    OPTION_PARAMS,
    ActorType,
    AuditLogger,
    AuditValidationError,
    Category,
    Outcome,
    audit_event,
    configure,
    emit_stats,
    new_event_id,
    reset_emit_stats,
)
from otel_audit.record import LogRecordData
from otel_audit.schema import load_schema
from otel_audit.validate import validate

SCHEMA = load_schema()
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
GOOD: dict[str, Any] = {
    "action": "invoice.update",
    "category": "data_change",
    "outcome": "success",
    "actor_id": "u-1",
    "actor_type": "user",
    "resource_type": "invoice",
    "resource_id": "inv-1",
}


class Pipeline:
    """An SDK LoggerProvider with an in-memory exporter, read back as LogRecordData."""

    def __init__(self, resource: dict[str, Any] | None = None) -> None:
        self.provider = _logs_compat.sdk_logger_provider(
            {"service.name": "billing"} if resource is None else resource
        )
        self.exporter = _logs_compat.in_memory_exporter()
        self.provider.add_log_record_processor(_logs_compat.simple_processor(self.exporter))
        self.audit = AuditLogger(self.provider)

    def records(self) -> list[LogRecordData]:
        return [_logs_compat.readable_to_record(i) for i in self.exporter.get_finished_logs()]


@pytest.fixture
def pipe() -> Iterator[Pipeline]:
    reset_emit_stats()
    configure(strict=False)
    p = Pipeline()
    yield p
    configure(strict=None)
    p.provider.shutdown()


@pytest.fixture
def tracer() -> Any:
    return TracerProvider().get_tracer("test")


def test_signature_matches_schema_params() -> None:
    for func in (AuditLogger.emit, audit_event):
        params = inspect.signature(func).parameters
        keyword = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        assert keyword - OPTION_PARAMS == {f.param for f in SCHEMA.fields}
        assert keyword & {f.param for f in SCHEMA.fields} == {f.param for f in SCHEMA.fields}
        assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def test_enums_come_from_the_schema() -> None:
    assert [m.value for m in Category] == list(SCHEMA.field("audit.category").enum)
    assert [m.value for m in Outcome] == list(SCHEMA.field("audit.outcome").enum)
    assert [m.value for m in ActorType] == list(SCHEMA.field("audit.actor.type").enum)
    assert Category["DATA_CHANGE"] == "data_change"


def test_public_api() -> None:
    for name in otel_audit.__all__:
        assert hasattr(otel_audit, name), name
    assert otel_audit.audit_event is audit_event


def test_emit_records_schema_attributes_and_trace(pipe: Pipeline, tracer: Any) -> None:
    with tracer.start_as_current_span("update") as span:
        event_id = pipe.audit.emit(
            **GOOD,
            actor_name="Ada",
            tenant_id="acme",
            client_address="203.0.113.7",
            user_agent="curl/8",
            session_id="s-1",
            correlation_id="order-7",
            reason="edited total",
            attributes={"order.total_cents": 1299},
            **{"http.route": "/invoices/{id}"},
        )
    (record,) = pipe.records()
    ctx = span.get_span_context()
    assert record.trace_id == f"{ctx.trace_id:032x}"
    assert record.span_id == f"{ctx.span_id:016x}"
    a = record.attributes
    assert a["audit.action"] == "invoice.update"
    assert a["audit.actor.name"] == "Ada"
    assert a["audit.tenant.id"] == "acme"
    assert a["client.address"] == "203.0.113.7"
    assert a["user_agent.original"] == "curl/8"
    assert a["order.total_cents"] == 1299
    assert a["http.route"] == "/invoices/{id}"
    assert a["audit.event.id"] == event_id
    assert UUID7.match(event_id)
    assert record.event_name == "invoice.update"
    assert record.body == "user u-1 invoice.update invoice/inv-1: success"
    assert (record.severity_number, record.severity_text) == (9, "INFO")
    assert record.resource["service.name"] == "billing"
    assert record.scope_name == "otel_audit"
    assert abs(record.time_unix_nano - time.time_ns()) < 60 * 10**9
    assert validate(record) == []
    assert emit_stats() == {"emitted": 1, "invalid": 0, "errors": 0, "unconfigured": 0}


@pytest.mark.parametrize(
    ("outcome", "number", "text"),
    [
        ("success", 9, "INFO"),
        ("unknown", 9, "INFO"),
        ("failure", 13, "WARN"),
        ("denied", 13, "WARN"),
    ],
)
def test_severity_follows_schema(pipe: Pipeline, outcome: str, number: int, text: str) -> None:
    assert SCHEMA.severity[outcome] == number
    pipe.audit.emit(**{**GOOD, "outcome": outcome})
    (record,) = pipe.records()
    assert (record.severity_number, record.severity_text) == (number, text)


def test_enum_members_are_sent_as_strings(pipe: Pipeline) -> None:
    pipe.audit.emit(
        **{
            **GOOD,
            "category": Category.DATA_CHANGE,
            "outcome": Outcome.DENIED,
            "actor_type": ActorType.SERVICE,
        }
    )
    (record,) = pipe.records()
    assert record.attributes["audit.outcome"] == "denied"
    assert type(record.attributes["audit.outcome"]) is str
    assert record.attributes["audit.actor.type"] == "service"


def test_given_event_id_and_body_are_kept(pipe: Pipeline) -> None:
    eid = new_event_id()
    assert pipe.audit.emit(**GOOD, event_id=eid, body="custom") == eid
    (record,) = pipe.records()
    assert record.attributes["audit.event.id"] == eid
    assert record.body == "custom"


def test_explicit_context_wins_over_current(pipe: Pipeline, tracer: Any) -> None:
    from opentelemetry import trace

    with tracer.start_as_current_span("outer") as outer:
        ctx = trace.set_span_in_context(outer)
    with tracer.start_as_current_span("other"):
        pipe.audit.emit(**GOOD, context=ctx)
    (record,) = pipe.records()
    assert record.span_id == f"{outer.get_span_context().span_id:016x}"


def test_no_span_means_no_trace_ids(pipe: Pipeline) -> None:
    pipe.audit.emit(**GOOD)
    (record,) = pipe.records()
    assert (record.trace_id, record.span_id) == ("", "")


def test_invalid_event_is_emitted_reported_and_counted(
    pipe: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_audit"):
        eid = pipe.audit.emit(action="Invoice Update", category="data_change", outcome="ok")
        pipe.audit.emit(action="Invoice Update", category="data_change", outcome="ok")
    records = pipe.records()
    assert len(records) == 2  # still emitted: the receiver dead-letters it
    assert records[0].attributes["audit.event.id"] == eid
    assert emit_stats()["invalid"] == 2
    warnings = [r for r in caplog.records if "invalid audit event" in r.getMessage()]
    assert len(warnings) == 1  # once per kind of mistake
    text = warnings[0].getMessage()
    assert "audit.action" in text and "audit.outcome" in text and "audit.actor.id" in text
    assert records[0].severity_text == "INFO"  # unknown outcome -> the schema's 'unknown'


def test_strict_mode_raises_with_every_violation(pipe: Pipeline) -> None:
    configure(strict=True)
    with pytest.raises(AuditValidationError) as err:
        pipe.audit.emit(action="invoice.update", category="data_change", outcome="success")
    got = {(v.field, v.rule) for v in err.value.violations}
    assert got == {
        ("audit.actor.id", "required"),
        ("audit.actor.type", "required"),
        ("audit.resource.type", "required"),
        ("audit.resource.id", "required"),
    }
    assert "audit.actor.id [required]" in str(err.value)
    assert pipe.records() == []
    pipe.audit.emit(**GOOD)  # valid events pass in strict mode
    assert len(pipe.records()) == 1


def test_strict_mode_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(strict=None)
    monkeypatch.setenv("OTEL_AUDIT_STRICT", "1")
    assert otel_audit.is_strict()
    monkeypatch.setenv("OTEL_AUDIT_STRICT", "0")
    assert not otel_audit.is_strict()
    configure(strict=True)
    assert otel_audit.is_strict()
    configure(strict=None)


def test_schema_attribute_in_extras_is_a_violation(pipe: Pipeline) -> None:
    pipe.audit.emit(**GOOD, attributes={"audit.actor.id": "root"})
    (record,) = pipe.records()
    assert record.attributes["audit.actor.id"] == "u-1"
    assert emit_stats()["invalid"] == 1


class ResourceHidingProvider:
    """A provider whose resource lacks service.name (the SDK would fill in a default)."""

    def __init__(self, inner: Any, attributes: dict[str, Any]) -> None:
        self.inner = inner
        self.resource = type("R", (), {"attributes": attributes})()

    def get_logger(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.get_logger(*args, **kwargs)


def test_missing_service_name_is_reported(pipe: Pipeline, caplog: pytest.LogCaptureFixture) -> None:
    audit = AuditLogger(ResourceHidingProvider(pipe.provider, {"host.name": "h"}))
    with caplog.at_level(logging.WARNING, logger="otel_audit"):
        audit.emit(**GOOD)
    assert emit_stats()["invalid"] == 1
    assert len(pipe.records()) == 1
    assert any("resource.service.name" in r.getMessage() for r in caplog.records)


def test_default_service_name_is_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    reset_emit_stats()
    emit._reported.clear()
    p = Pipeline(resource={})
    assert p.records() == []
    with caplog.at_level(logging.WARNING, logger="otel_audit"):
        p.audit.emit(**GOOD)
        p.audit.emit(**GOOD)
    (record, _) = p.records()
    assert record.resource["service.name"].startswith("unknown_service")
    assert emit_stats()["invalid"] == 0
    warned = [r for r in caplog.records if "default service.name" in r.getMessage()]
    assert len(warned) == 1


class ExplodingLogger:
    def emit(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("exporter on fire")


class ExplodingProvider:
    def get_logger(self, *args: Any, **kwargs: Any) -> Any:
        return ExplodingLogger()


class BrokenProvider:
    def get_logger(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("misconfigured")


@pytest.mark.parametrize("provider", [ExplodingProvider(), BrokenProvider(), object()])
def test_sdk_failures_never_raise(provider: Any, caplog: pytest.LogCaptureFixture) -> None:
    reset_emit_stats()
    configure(strict=True)  # strict is about validation, not about a broken pipeline
    try:
        with caplog.at_level(logging.WARNING, logger="otel_audit"):
            for _ in range(3):
                eid = AuditLogger(provider).emit(**GOOD)
                assert UUID7.match(eid)
    finally:
        configure(strict=None)
    assert emit_stats()["errors"] == 3
    assert emit_stats()["emitted"] == 0


def test_hostile_arguments_never_raise(pipe: Pipeline) -> None:
    class Evil:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no")

        __hash__ = object.__hash__

    loop: list[Any] = []
    loop.append(loop)
    pipe.audit.emit(action=Evil(), actor_id=b"\xff" * 10**6, **{"loop": loop})  # type: ignore[arg-type]
    pipe.audit.emit(**GOOD, time_unix_nano="yesterday")  # type: ignore[arg-type]
    stats = emit_stats()
    assert stats["invalid"] + stats["errors"] == 2


def test_global_provider_is_used(tmp_path: Any) -> None:
    # The global LoggerProvider can be set once per process: check it in a fresh one.
    script = """
import sys
from opentelemetry._logs import set_logger_provider
from otel_audit import _logs_compat, audit_event, emit_stats
before = audit_event(action="a.b", category="system", outcome="success",
                     actor_id="x", actor_type="system")
assert emit_stats()["unconfigured"] == 1, emit_stats()
provider = _logs_compat.sdk_logger_provider({"service.name": "svc"})
exporter = _logs_compat.in_memory_exporter()
provider.add_log_record_processor(_logs_compat.simple_processor(exporter))
set_logger_provider(provider)
audit_event(action="a.b", category="system", outcome="success", actor_id="x",
            actor_type="system")
(item,) = exporter.get_finished_logs()
record = _logs_compat.readable_to_record(item)
assert record.resource["service.name"] == "svc"
assert emit_stats()["unconfigured"] == 1, emit_stats()
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OTEL_AUDIT_STRICT": ""},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert "no OpenTelemetry LoggerProvider is configured" in out.stderr


# --- UUIDv7 -----------------------------------------------------------------------------


def test_uuid7_layout() -> None:
    ms = 0x0123_4567_89AB
    u = uuid.UUID(new_event_id(ms + 10**6))
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert UUID7.match(str(u))
    now_ms = time.time_ns() // 1_000_000
    u = uuid.UUID(new_event_id())
    assert abs((u.int >> 80) - now_ms) < 5000


def test_uuid7_timestamp_is_the_unix_ms() -> None:
    emit._reset_uuid_state()
    u = uuid.UUID(new_event_id(1_767_225_600_000))
    assert u.int >> 80 == 1_767_225_600_000
    emit._reset_uuid_state()


def test_uuid7_monotonic_within_a_millisecond_and_backwards_clock() -> None:
    emit._reset_uuid_state()
    ids = [new_event_id(1_767_225_600_000) for _ in range(5000)]
    ids += [new_event_id(1_767_225_599_000) for _ in range(10)]  # clock stepped back
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for i in ids:
        u = uuid.UUID(i)
        assert u.version == 7 and u.variant == uuid.RFC_4122
        assert u.int >> 80 >= 1_767_225_600_000
    emit._reset_uuid_state()


def test_uuid7_counter_overflow_advances_the_timestamp() -> None:
    emit._reset_uuid_state()
    emit._last_ms = 1_767_225_600_000
    emit._last_rand = (1 << 74) - 2
    u = uuid.UUID(new_event_id(1_767_225_600_000))
    assert u.int >> 80 == 1_767_225_600_001
    emit._reset_uuid_state()


def test_uuid7_unique_across_threads() -> None:
    out: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [new_event_id() for _ in range(2000)]
        assert mine == sorted(mine)
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 8000


def test_emit_is_cheap(pipe: Pipeline) -> None:
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        pipe.audit.emit(**GOOD)
    per_call_us = (time.perf_counter() - start) / n * 1e6
    # Generous bound for slow CI machines; typically ~30 us including the SDK.
    assert per_call_us < 1000, per_call_us
