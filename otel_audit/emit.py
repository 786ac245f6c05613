"""Record an audit event from a service, in one call.

::

    from otel_audit import audit_event

    audit_event(action="invoice.update", category="data_change", outcome="success",
                actor_id="u-1", actor_type="user", resource_type="invoice", resource_id="inv-1")

The event is a log record emitted through the application's OpenTelemetry
``LoggerProvider`` (the global one, or the one given to :class:`AuditLogger`), so it rides
the pipeline the service already has; the SDK attaches the active trace and span ids. The
helper mints a UUIDv7 event id, sets the schema's attributes, a short body, the event name
(the action) and the severity the schema assigns to the outcome.

Every call is validated locally against the schema. An invalid event is still emitted (the
receiver rejects it into its dead-letter index, so nothing disappears silently) and is
reported: a WARNING on the ``otel_audit`` logger (once per kind of mistake), the
``otel_audit.emit.invalid`` metric counter and :func:`emit_stats`. Nothing here raises into
the service or blocks it - unless the application opts into strict mode
(``configure(strict=True)`` or ``OTEL_AUDIT_STRICT=1``), where an invalid call raises
:class:`AuditValidationError` and is not emitted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context

from otel_audit import _logs_compat
from otel_audit.record import LogRecordData
from otel_audit.schema import load_schema
from otel_audit.validate import Violation, validate

__all__ = [
    "OPTION_PARAMS",
    "ActorType",
    "AuditLogger",
    "AuditValidationError",
    "Category",
    "Outcome",
    "audit_event",
    "configure",
    "emit_stats",
    "event_id_at",
    "is_strict",
    "new_event_id",
    "reset_emit_stats",
]

_log = logging.getLogger("otel_audit")
_SCHEMA = load_schema()
_FIELDS = _SCHEMA.fields
_SCOPE_NAME = "otel_audit"
_SCOPE_VERSION = "0.1.0"

# Keyword parameters of the helper that are not schema fields.
OPTION_PARAMS = frozenset({"attributes", "body", "context", "time_unix_nano"})


def _enum(name: str, attribute: str) -> type[StrEnum]:
    values = _SCHEMA.field(attribute).enum
    return StrEnum(name, {v.upper(): v for v in values})  # type: ignore[return-value]


Category = _enum("Category", "audit.category")
"""The schema's categories (``Category.DATA_CHANGE == "data_change"``); plain strings work too."""
Outcome = _enum("Outcome", "audit.outcome")
"""The schema's outcomes (``Outcome.DENIED == "denied"``)."""
ActorType = _enum("ActorType", "audit.actor.type")
"""The schema's actor types (``ActorType.SERVICE == "service"``)."""


class AuditValidationError(ValueError):
    """Raised in strict mode when an audit event breaks the schema; lists every violation."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = list(violations)
        lines = "\n".join(f"  - {v.field} [{v.rule}]: {v.message}" for v in self.violations)
        super().__init__(f"invalid audit event ({len(self.violations)} violations):\n{lines}")


# --- configuration -------------------------------------------------------------------------

_strict: bool | None = None


def configure(*, strict: bool | None = None) -> None:
    """Set process-wide options. ``strict=True`` makes invalid events raise (for tests and
    development); ``None`` returns to the ``OTEL_AUDIT_STRICT`` environment variable."""
    global _strict
    _strict = strict


def is_strict() -> bool:
    """Whether invalid events raise :class:`AuditValidationError`."""
    if _strict is not None:
        return _strict
    return os.environ.get("OTEL_AUDIT_STRICT", "").strip().lower() in ("1", "true", "yes", "on")


# --- counters ------------------------------------------------------------------------------

_stats_lock = threading.Lock()
_stats = {"emitted": 0, "invalid": 0, "errors": 0, "unconfigured": 0}


def emit_stats() -> dict[str, int]:
    """In-process counts since start: ``emitted`` (handed to the SDK), ``invalid`` (failed
    validation; still emitted unless strict), ``errors`` (the SDK raised; the event is lost)
    and ``unconfigured`` (emitted while no SDK LoggerProvider was installed: dropped)."""
    with _stats_lock:
        return dict(_stats)


def reset_emit_stats() -> None:
    """Zero the in-process counters (for tests)."""
    with _stats_lock:
        for key in _stats:
            _stats[key] = 0


def _count(key: str) -> None:
    with _stats_lock:
        _stats[key] += 1


def _make_counters() -> tuple[Any, Any]:
    # The API's proxy meter forwards to whatever MeterProvider the application sets later.
    try:
        meter = metrics.get_meter(_SCOPE_NAME, _SCOPE_VERSION)
        invalid = meter.create_counter(
            "otel_audit.emit.invalid",
            unit="{event}",
            description="Audit events that failed local schema validation",
        )
        errors = meter.create_counter(
            "otel_audit.emit.errors",
            unit="{event}",
            description="Audit events the OpenTelemetry SDK failed to accept",
        )
    except Exception:
        return None, None
    return invalid, errors


_invalid_counter, _error_counter = _make_counters()


def _metric_add(counter: Any, attributes: dict[str, str]) -> None:
    if counter is None:
        return
    with contextlib.suppress(Exception):  # a broken meter must not break auditing
        counter.add(1, attributes)


# --- reporting, once per kind ---------------------------------------------------------------

_MAX_REPORT_KEYS = 1024
_reported: set[tuple[Any, ...]] = set()
_reported_lock = threading.Lock()


def _first_time(key: tuple[Any, ...]) -> bool:
    with _reported_lock:
        if key in _reported:
            return False
        if len(_reported) >= _MAX_REPORT_KEYS:
            return False
        _reported.add(key)
        return True


def _report_invalid(action: Any, violations: list[Violation]) -> None:
    _count("invalid")
    _metric_add(_invalid_counter, {"rule": violations[0].rule})
    shown = action[:64] if isinstance(action, str) else repr(action)[:64]
    key = ("invalid", shown, tuple((v.field[:64], v.rule) for v in violations[:8]))
    if _first_time(key):
        _log.warning(
            "invalid audit event %s (emitted anyway; the receiver will reject it): %s",
            shown,
            "; ".join(str(v) for v in violations[:8]),
        )


def _report_error(exc: BaseException) -> None:
    _count("errors")
    _metric_add(_error_counter, {"error.type": type(exc).__name__})
    if _first_time(("error", type(exc).__name__)):
        _log.warning("audit event could not be emitted: %r", exc, exc_info=exc)


# --- event ids ------------------------------------------------------------------------------

_RAND_BITS = 74  # 12 bits rand_a + 62 bits rand_b
_RAND_MASK = (1 << _RAND_BITS) - 1
_uuid_lock = threading.Lock()
_last_ms = -1
_last_rand = 0


def _reset_uuid_state() -> None:
    global _last_ms, _last_rand
    _last_ms = -1
    _last_rand = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_uuid_state)


def new_event_id(unix_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, RFC variant, 74 random bits.

    Ids minted in this process are strictly increasing (RFC 9562 section 6.2, method 2):
    within one millisecond, or when the clock steps back, the random part grows by a random
    amount instead of being drawn afresh; when it would overflow, the timestamp advances.
    """
    global _last_ms, _last_rand
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    with _uuid_lock:
        if ms > _last_ms:
            # The top bit starts clear so a burst in one millisecond rarely overflows.
            rand = int.from_bytes(os.urandom(10), "big") & (_RAND_MASK >> 1)
        else:
            ms = _last_ms
            rand = _last_rand + 1 + (int.from_bytes(os.urandom(4), "big") & 0xFFFFFF)
            if rand > _RAND_MASK:
                ms += 1
                rand = int.from_bytes(os.urandom(10), "big") & (_RAND_MASK >> 1)
        _last_ms, _last_rand = ms, rand
    return _uuid7(ms & ((1 << 48) - 1), rand)


def _uuid7(ms: int, rand: int) -> str:
    """The UUIDv7 text of 48-bit milliseconds and 74 random bits (12 rand_a, 62 rand_b)."""
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62)
    value |= rand & ((1 << 62) - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def event_id_at(unix_ms: int, rand: int | None = None) -> str:
    """A UUIDv7 whose embedded time is ``unix_ms``, for events that happened earlier.

    An import of historical events needs ids of their own time: the receiver stores an
    event in the daily index of its id's time. Unlike :func:`new_event_id` there is no
    ordering across calls: the 74 bits after the time are random, or ``rand`` (for
    reproducible ids, e.g. generated test data).
    """
    if not 0 <= unix_ms < 1 << 48:
        raise ValueError(f"unix_ms {unix_ms} is outside the 48 bits a UUIDv7 holds")
    if rand is None:
        rand = int.from_bytes(os.urandom(10), "big")
    return _uuid7(unix_ms, rand & _RAND_MASK)


# --- the helper -----------------------------------------------------------------------------

_BODY_PART_CHARS = 128


def _part(value: Any) -> str:
    if not isinstance(value, str):
        return "?" if value is None else type(value).__name__
    return value if len(value) <= _BODY_PART_CHARS else value[:_BODY_PART_CHARS] + "…"


def _default_body(attrs: Mapping[str, Any]) -> str:
    text = f"{_part(attrs.get('audit.actor.type'))} {_part(attrs.get('audit.actor.id'))} "
    text += _part(attrs.get("audit.action"))
    rtype, rid = attrs.get("audit.resource.type"), attrs.get("audit.resource.id")
    if rtype is not None or rid is not None:
        text += f" {_part(rtype)}/{_part(rid)}"
    return f"{text}: {_part(attrs.get('audit.outcome'))}"


def _severity(outcome: Any) -> tuple[int, str]:
    number = (
        _SCHEMA.severity.get(outcome, _SCHEMA.severity["unknown"])
        if isinstance(outcome, str)
        else _SCHEMA.severity["unknown"]
    )
    return number, ("WARN" if number >= 13 else "INFO")


def _current_ids(context: Context | None) -> tuple[str, str]:
    span_context = trace.get_current_span(context).get_span_context()
    if not span_context.is_valid:
        return "", ""
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


def _check_default_service_name(resource: Mapping[str, Any]) -> None:
    # The SDK fills in "unknown_service:..." when the application never named itself: valid
    # on the wire, useless for origination, so say it once.
    name = resource.get("service.name")
    if (
        isinstance(name, str)
        and name.startswith("unknown_service")
        and _first_time(("unknown_service",))
    ):
        _log.warning(
            "the LoggerProvider's resource has the default service.name %r: set "
            "OTEL_SERVICE_NAME or the service.name resource attribute so audit events name "
            "their origin",
            name,
        )


# Set by otel_audit.testing.capture_audit_events to route the global helper to a capture.
_provider_override: Any = None


class AuditLogger:
    """Emits audit events through one OpenTelemetry ``LoggerProvider``.

    ``AuditLogger()`` follows the global provider (looked up on every call, so it may be set
    after this object is made); ``AuditLogger(provider)`` pins one.
    """

    def __init__(self, logger_provider: Any = None) -> None:
        self._provider = logger_provider
        self._cached_provider: Any = None
        self._logger: Any = None
        self._resource_key: Any = None
        self._resource: dict[str, Any] | None = None

    def _resolve(self) -> tuple[Any, Any]:
        provider = self._provider
        if provider is None:
            provider = _provider_override
        if provider is None:
            provider = _logs_compat.get_logger_provider()
        if provider is not self._cached_provider or self._logger is None:
            self._logger = provider.get_logger(_SCOPE_NAME, _SCOPE_VERSION)
            self._cached_provider = provider
        return provider, self._logger

    def _resource_of(self, provider: Any) -> dict[str, Any] | None:
        resource = getattr(provider, "resource", None)
        if resource is not self._resource_key or resource is None:
            self._resource_key = resource
            self._resource = _logs_compat.provider_resource(provider)
        return self._resource

    def emit(
        self,
        *,
        action: str | None = None,
        category: str | None = None,
        outcome: str | None = None,
        actor_id: str | None = None,
        actor_type: str | None = None,
        actor_name: str | None = None,
        actor_roles: Sequence[str] | None = None,
        resource_type: str | None = None,
        resource_id: str | None = None,
        event_id: str | None = None,
        correlation_id: str | None = None,
        reason: str | None = None,
        tenant_id: str | None = None,
        target_user_id: str | None = None,
        target_user_name: str | None = None,
        client_address: str | None = None,
        user_agent: str | None = None,
        session_id: str | None = None,
        error_type: str | None = None,
        body: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        context: Context | None = None,
        time_unix_nano: int | None = None,
        **extra: Any,
    ) -> str:
        """Record one audit event; returns its event id.

        The schema parameters (``action`` ... ``error_type``) map to the wire attributes of
        ``docs/schema.md``; ``action``, ``category``, ``outcome``, ``actor_id`` and
        ``actor_type`` are required, ``resource_type``/``resource_id`` too for data,
        permission and configuration categories. ``event_id`` defaults to a fresh UUIDv7.
        Further attributes go in ``attributes`` (any keys) or as keyword arguments.
        ``body`` replaces the generated message; ``context`` the current OTel context;
        ``time_unix_nano`` the current time.
        """
        given = locals()
        attrs: dict[str, Any] = {}
        violations: list[Violation] = []
        try:
            for mapping in (attributes, extra):
                if not mapping:
                    continue
                for key, value in mapping.items():
                    if key in _SCHEMA.by_attribute:
                        param = _SCHEMA.by_attribute[key].param
                        message = _SCHEMA.message("use_parameter", param=f"{param}=")
                        violations.append(Violation(key, "attribute_key", message))
                        continue
                    attrs[key] = value
            for f in _FIELDS:
                value = given.get(f.param)
                if value is None:
                    continue
                if isinstance(value, StrEnum):
                    value = value.value
                elif f.array and isinstance(value, (list, tuple)):
                    value = list(value)
                attrs[f.attribute] = value
            now = time.time_ns()
            ts = now if time_unix_nano is None else time_unix_nano
            if event_id is None:
                attrs["audit.event.id"] = new_event_id(now // 1_000_000)
            if body is None:
                body = _default_body(attrs)
            severity_number, severity_text = _severity(attrs.get("audit.outcome"))
            action_value = attrs.get("audit.action")
            event_name = action_value if isinstance(action_value, str) else ""
        except Exception as exc:  # hostile argument values (e.g. a failing __eq__)
            _report_error(exc)
            return ""
        event_id_value = str(attrs.get("audit.event.id", ""))

        try:
            provider, logger = self._resolve()
            resource = self._resource_of(provider)
        except Exception as exc:
            _report_error(exc)
            return event_id_value

        trace_id, span_id = _current_ids(context)
        record = LogRecordData(
            attributes=attrs,
            resource=resource if resource is not None else {},
            time_unix_nano=ts if isinstance(ts, int) else 0,
            observed_time_unix_nano=now,
            severity_number=severity_number,
            severity_text=severity_text,
            body=body,
            trace_id=trace_id,
            span_id=span_id,
            event_name=event_name,
            scope_name=_SCOPE_NAME,
            scope_version=_SCOPE_VERSION,
        )
        found = validate(record, now_ns=now, schema=_SCHEMA)
        if resource is None:
            # The provider hides its resource: the receiver checks service.name instead.
            found = [v for v in found if not v.field.startswith("resource")]
        violations.extend(found)
        if violations:
            if is_strict():
                raise AuditValidationError(violations)
            _report_invalid(action_value, violations)

        if resource is not None:
            _check_default_service_name(resource)
        if resource is None and _logs_compat.is_noop_provider(provider):
            _count("unconfigured")
            if _first_time(("unconfigured",)):
                _log.warning(
                    "no OpenTelemetry LoggerProvider is configured: audit events are dropped "
                    "until the application sets one (opentelemetry._logs.set_logger_provider)"
                )
        try:
            _logs_compat.emit_record(
                logger,
                timestamp_ns=record.time_unix_nano,
                observed_timestamp_ns=now,
                severity_number=severity_number,
                severity_text=severity_text,
                body=body,
                attributes=attrs,
                event_name=event_name,
                context=context,
            )
        except Exception as exc:
            _report_error(exc)
            return event_id_value
        _count("emitted")
        return event_id_value


_default_logger = AuditLogger()
audit_event = _default_logger.emit
"""Record one audit event through the global LoggerProvider (see :meth:`AuditLogger.emit`)."""
