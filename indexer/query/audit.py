"""Every query of the audit log is itself an audit event (PCI DSS 10.2.1.3).

A served search produces ``audit_log.search``, a read of one event or trace
``audit_log.read``, a stats request ``audit_log.stats``: category ``data_access``,
resource type ``audit_log``, actor the token's subject; a request refused for lack of a
role is recorded with outcome ``denied``. The record goes through the normal pipeline:

* inside ``otel-audit serve``: a :class:`~otel_audit.record.LogRecordData` handed to the
  receiver's ingest in process (a :data:`WriteRecords` callable, its ``consume_logs``),
  awaited before the answer is sent: if the access cannot be recorded the query fails
  (fail closed, 503);
* standalone (``otel-audit query-api``): the OTel SDK's OTLP/HTTP log exporter sends it
  to the receiver; the SDK batches and retries, the answer does not wait for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import orjson

from indexer.query.config import QueryConfig
from otel_audit import _logs_compat
from otel_audit.emit import new_event_id
from otel_audit.record import LogRecordData

__all__ = [
    "AuditSink",
    "ConsumerSink",
    "OtlpSink",
    "QueryAuditor",
    "WriteRecords",
    "Written",
    "query_audit_record",
]

_log = logging.getLogger(__name__)
SCOPE_NAME = "otel_audit.query_api"


class Written(Protocol):
    """What writing records answers: how many were rejected, and why."""

    @property
    def rejected(self) -> int:
        """Records refused."""
        ...

    @property
    def error_message(self) -> str:
        """Why, when any was refused."""
        ...


WriteRecords = Callable[[list[LogRecordData]], Awaitable[Written]]
"""Makes records durable in process and says which were refused (the receiver's
``consume_logs``)."""


class AuditSink(Protocol):
    """Where query audit records go."""

    async def record(self, record: LogRecordData) -> None:
        """Make the record durable (or hand it to something that will)."""
        ...

    async def shutdown(self) -> None:
        """Flush and release resources."""
        ...


def query_audit_record(
    *,
    subject: str,
    action: str,
    resource_id: str,
    outcome: str,
    details: Mapping[str, Any],
    service_name: str,
    client_address: str = "",
    user_agent: str = "",
    reason: str = "",
) -> LogRecordData:
    """The log record of one query of the audit log."""
    now = time.time_ns()
    attrs: dict[str, Any] = {
        "audit.event.id": new_event_id(),
        "audit.action": action,
        "audit.category": "data_access",
        "audit.outcome": outcome,
        "audit.actor.id": subject,
        "audit.actor.type": "user",
        "audit.resource.type": "audit_log",
        "audit.resource.id": resource_id,
        # Kept under audit.extra: exactly what was asked, as JSON text.
        "audit_log.query": orjson.dumps(dict(details), option=orjson.OPT_SORT_KEYS).decode(),
    }
    if reason:
        attrs["audit.reason"] = reason
    if client_address:
        attrs["client.address"] = client_address
    if user_agent:
        attrs["user_agent.original"] = user_agent[:512]
    return LogRecordData(
        attributes=attrs,
        resource={"service.name": service_name},
        time_unix_nano=now,
        observed_time_unix_nano=now,
        severity_number=9 if outcome == "success" else 13,
        severity_text="INFO" if outcome == "success" else "WARN",
        body=f"{subject} {action} {resource_id}",
        event_name="audit",
        scope_name=SCOPE_NAME,
    )


class ConsumerSink:
    """Hands records to the receiver's ingest in process and waits until they are durable."""

    def __init__(self, write: WriteRecords) -> None:
        self._write = write

    async def record(self, record: LogRecordData) -> None:
        result = await self._write([record])
        if result.rejected:
            # Our own record failing validation is a bug: surface it, never hide it.
            raise RuntimeError(f"query audit event rejected: {result.error_message}")

    async def shutdown(self) -> None:
        return None


class OtlpSink:
    """Sends records to a receiver through the OTel SDK's OTLP/HTTP log exporter."""

    def __init__(self, endpoint: str, service_name: str) -> None:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        self._provider = _logs_compat.sdk_logger_provider({"service.name": service_name})
        self._provider.add_log_record_processor(
            _logs_compat.batch_processor(
                OTLPLogExporter(endpoint=endpoint.rstrip("/") + "/v1/logs"),
                schedule_delay_millis=200,
            )
        )
        self._logger = self._provider.get_logger(SCOPE_NAME)

    async def record(self, record: LogRecordData) -> None:
        _logs_compat.emit_record(
            self._logger,
            timestamp_ns=record.time_unix_nano,
            severity_number=record.severity_number,
            severity_text=record.severity_text,
            body=str(record.body),
            attributes=record.attributes,
            event_name=record.event_name,
        )

    def force_flush(self, timeout_millis: int = 10_000) -> bool:
        """Export what is queued now (tests, shutdown)."""
        return bool(self._provider.force_flush(timeout_millis))

    async def shutdown(self) -> None:
        self._provider.shutdown()


class QueryAuditor:
    """Records queries; a no-op when ``audit_queries`` is off."""

    def __init__(self, config: QueryConfig, sink: AuditSink | None) -> None:
        self._config = config
        self.sink = sink if config.audit_queries else None

    @classmethod
    def for_app(cls, config: QueryConfig, write: WriteRecords | None) -> QueryAuditor:
        """In-process ``write`` when given, else OTLP to ``config.receiver_endpoint``."""
        if not config.audit_queries:
            return cls(config, None)
        if write is not None:
            return cls(config, ConsumerSink(write))
        return cls(config, OtlpSink(config.receiver_endpoint, config.service_name))

    async def record(
        self,
        *,
        subject: str,
        action: str,
        resource_id: str,
        details: Mapping[str, Any],
        outcome: str = "success",
        client_address: str = "",
        user_agent: str = "",
        reason: str = "",
    ) -> None:
        """Record one query; raises if the in-process consumer cannot store it."""
        if self.sink is None:
            return
        rec = query_audit_record(
            subject=subject,
            action=action,
            resource_id=resource_id,
            outcome=outcome,
            details=details,
            service_name=self._config.service_name,
            client_address=client_address,
            user_agent=user_agent,
            reason=reason,
        )
        await self.sink.record(rec)

    async def shutdown(self) -> None:
        """Flush the sink."""
        if self.sink is not None:
            await self.sink.shutdown()
