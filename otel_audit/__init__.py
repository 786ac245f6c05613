"""otel-audit: audit events as OpenTelemetry log records.

Services import :func:`audit_event` (or an :class:`AuditLogger` bound to their own
``LoggerProvider``); tests use :mod:`otel_audit.testing`. The schema, the validator and the
document builder live in :mod:`otel_audit.schema`, :mod:`otel_audit.validate` and
:mod:`otel_audit.document` (the function ``validate`` is deliberately not re-exported here:
it would shadow the module of the same name).
"""

from otel_audit.emit import (
    ActorType,
    AuditLogger,
    AuditValidationError,
    Category,
    Outcome,
    audit_event,
    configure,
    emit_stats,
    is_strict,
    new_event_id,
    reset_emit_stats,
)
from otel_audit.record import LogRecordData
from otel_audit.validate import Violation

__all__ = [
    "ActorType",
    "AuditLogger",
    "AuditValidationError",
    "Category",
    "LogRecordData",
    "Outcome",
    "Violation",
    "__version__",
    "audit_event",
    "configure",
    "emit_stats",
    "is_strict",
    "new_event_id",
    "reset_emit_stats",
]

__version__ = "0.1.0"
