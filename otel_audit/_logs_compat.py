"""The one module that touches the OpenTelemetry SDK's unstable logs API (``_logs``).

The logs signal of opentelemetry-python is still private (``opentelemetry._logs``,
``opentelemetry.sdk._logs``) and its shapes moved between releases:

* 1.27-1.34: ``Logger.emit(record)`` only; trace ids are passed on the ``LogRecord``;
  exporters receive ``LogData(log_record, instrumentation_scope)`` whose record holds the
  resource; the in-memory exporter is ``InMemoryLogExporter``.
* 1.35+: ``LogRecord(context=...)`` takes trace ids from a context.
* newer (1.39+): ``Logger.emit(**fields)`` accepts keyword arguments; exporters receive
  ``ReadableLogRecord(log_record, resource, instrumentation_scope)``; the in-memory exporter
  is ``InMemoryLogRecordExporter``.

Everything else in ``otel_audit`` goes through the functions here, which probe the installed
release once, so a new SDK release needs changes in this file only.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import (
    Logger,
    LoggerProvider,
    LogRecord,
    NoOpLoggerProvider,
    SeverityNumber,
    get_logger_provider,
)
from opentelemetry.context import Context

from otel_audit.record import LogRecordData

__all__ = [
    "Logger",
    "LoggerProvider",
    "SeverityNumber",
    "batch_processor",
    "emit_record",
    "get_logger_provider",
    "in_memory_exporter",
    "is_noop_provider",
    "provider_resource",
    "readable_to_record",
    "sdk_logger_provider",
    "simple_processor",
]


def _keyword_names(func: Any) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return frozenset()


_RECORD_KWARGS = _keyword_names(LogRecord.__init__)


def _emit_takes_keywords(logger: Logger) -> bool:
    # Probed per logger class: SDK, proxy and third-party loggers may differ.
    cls = type(logger)
    cached = _EMIT_KEYWORDS.get(cls)
    if cached is None:
        cached = "event_name" in _keyword_names(cls.emit) and "attributes" in _keyword_names(
            cls.emit
        )
        _EMIT_KEYWORDS[cls] = cached
    return cached


_EMIT_KEYWORDS: dict[type, bool] = {}


def emit_record(
    logger: Logger,
    *,
    timestamp_ns: int,
    severity_number: int,
    severity_text: str,
    body: str,
    attributes: Mapping[str, Any],
    event_name: str,
    context: Context | None = None,
    observed_timestamp_ns: int | None = None,
) -> None:
    """Emit one log record; the SDK takes trace and span ids from ``context`` or the current one.

    ``timestamp_ns`` is when the event happened, ``observed_timestamp_ns`` when the helper
    saw it (OpenTelemetry's ObservedTimestamp, now when not given: they differ for an
    event given its own time).
    """
    if observed_timestamp_ns is None:
        observed_timestamp_ns = time.time_ns()
    severity = SeverityNumber(severity_number)
    if _emit_takes_keywords(logger):
        logger.emit(
            timestamp=timestamp_ns,
            observed_timestamp=observed_timestamp_ns,
            context=context,
            severity_number=severity,
            severity_text=severity_text,
            body=body,
            attributes=attributes,
            event_name=event_name,
        )
        return
    kwargs: dict[str, Any] = {
        "timestamp": timestamp_ns,
        "observed_timestamp": observed_timestamp_ns,
        "severity_number": severity,
        "severity_text": severity_text,
        "body": body,
        "attributes": attributes,
    }
    if "event_name" in _RECORD_KWARGS:
        kwargs["event_name"] = event_name
    if "context" in _RECORD_KWARGS:
        kwargs["context"] = context
    else:
        span_context = trace.get_current_span(context).get_span_context()
        kwargs["trace_id"] = span_context.trace_id
        kwargs["span_id"] = span_context.span_id
        kwargs["trace_flags"] = span_context.trace_flags
    record_cls: Any = LogRecord
    resource = getattr(logger, "resource", None)
    if resource is not None:
        # Before ReadableLogRecord existed the SDK's own LogRecord carried the resource.
        sdk_record_cls = _sdk_log_record_class()
        if sdk_record_cls is not None and "resource" in _keyword_names(sdk_record_cls.__init__):
            record_cls = sdk_record_cls
            kwargs["resource"] = resource
    logger.emit(record_cls(**kwargs))


def _sdk_log_record_class() -> Any:
    try:
        from opentelemetry.sdk import _logs as sdk_logs
    except ImportError:
        return None
    return getattr(sdk_logs, "LogRecord", None)


def provider_resource(provider: object) -> dict[str, Any] | None:
    """The provider's resource attributes, or None when the provider does not expose one."""
    resource = getattr(provider, "resource", None)
    attributes = getattr(resource, "attributes", None)
    if attributes is None:
        return None
    return dict(attributes)


def is_noop_provider(provider: object) -> bool:
    """True when records given to ``provider`` go nowhere (no SDK installed globally)."""
    if isinstance(provider, NoOpLoggerProvider):
        return True
    # The API's stand-in until set_logger_provider() is called; private, so matched by name.
    return type(provider).__name__ == "ProxyLoggerProvider" and get_logger_provider() is provider


def sdk_logger_provider(resource_attributes: Mapping[str, Any] | None = None) -> Any:
    """A fresh SDK ``LoggerProvider`` (not installed globally, no exit hook)."""
    from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create(dict(resource_attributes or {}))
    return SdkLoggerProvider(resource=resource, shutdown_on_exit=False)


def in_memory_exporter() -> Any:
    """The SDK's in-memory log exporter, under whichever name this release uses."""
    from opentelemetry.sdk._logs import export

    cls = getattr(export, "InMemoryLogRecordExporter", None) or export.InMemoryLogExporter
    return cls()


def simple_processor(exporter: Any) -> Any:
    """A ``SimpleLogRecordProcessor``: exports each record synchronously (for tests)."""
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    return SimpleLogRecordProcessor(exporter)


def batch_processor(exporter: Any, *, schedule_delay_millis: int = 5000) -> Any:
    """A ``BatchLogRecordProcessor``: what services use; exports off the calling thread."""
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    return BatchLogRecordProcessor(exporter, schedule_delay_millis=schedule_delay_millis)


def _hex(value: Any, width: int) -> str:
    if not isinstance(value, int) or value == 0:
        return ""
    return format(value, f"0{width}x")


def _plain(value: Any) -> Any:
    # The SDK stores sequences as tuples and maps as its own bounded mappings.
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def readable_to_record(item: Any) -> LogRecordData:
    """Turn what an SDK exporter receives into the neutral :class:`LogRecordData`."""
    log_record = item.log_record
    resource = getattr(item, "resource", None)
    if resource is None:
        resource = getattr(log_record, "resource", None)
    scope = getattr(item, "instrumentation_scope", None)
    severity = log_record.severity_number
    attributes = log_record.attributes
    return LogRecordData(
        attributes=_plain(attributes) if attributes else {},
        resource=dict(resource.attributes) if resource is not None else {},
        time_unix_nano=int(log_record.timestamp or 0),
        observed_time_unix_nano=int(log_record.observed_timestamp or 0),
        severity_number=int(severity.value) if severity is not None else 0,
        severity_text=log_record.severity_text or "",
        body=log_record.body,
        trace_id=_hex(log_record.trace_id, 32),
        span_id=_hex(log_record.span_id, 16),
        flags=int(log_record.trace_flags or 0),
        event_name=getattr(log_record, "event_name", None) or "",
        scope_name=getattr(scope, "name", "") or "",
        scope_version=getattr(scope, "version", "") or "",
        dropped_attributes_count=int(getattr(item, "dropped_attributes", 0) or 0),
    )
