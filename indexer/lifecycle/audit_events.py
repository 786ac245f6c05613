"""The audit events of the lifecycle: every archive, deletion, restore and hold is recorded.

They go through the receiver's ingest like any event, so they are stored, sealed into the
chain and signed: a policy deletion is itself on the tamper-evident record, an attacker's
deletion is not. Each record is a pure function of the signed lifecycle record it reports
(same event id, same time, same content), so a run that repeats a step after a crash
sends an exact duplicate, which the receiver answers as already stored.

=========================  ==============  ================================================
``event.action``           category        when
=========================  ==============  ================================================
``audit_log.archive``      data_change     a day's archive was written and verified
``audit_log.index_delete`` data_change     the policy deleted a day's hot index
``audit_log.purge``        data_change     the policy deleted a day's archive (retention)
``audit_log.restore``      data_change     archived days were re-indexed
``audit_log.hold_add``     configuration   a legal hold was placed
``audit_log.hold_release`` configuration   a legal hold was released
=========================  ==============  ================================================
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from otel_audit.emit import event_id_at
from otel_audit.record import LogRecordData

__all__ = ["SCOPE_NAME", "RecordEvent", "lifecycle_event"]

SCOPE_NAME = "otel_audit.lifecycle"

RecordEvent = Callable[[LogRecordData], None]
"""Makes one record durable through the receiver (raises when it cannot)."""

_CATEGORY = {
    "audit_log.hold_add": "configuration",
    "audit_log.hold_release": "configuration",
}


def _event_id(action: str, resource_id: str, time_ms: int) -> str:
    """A UUIDv7 of ``time_ms`` whose random bits come from the step: a repeated step after a
    crash sends the same id (a duplicate, not a second event)."""
    digest = hashlib.sha256(f"{action}\n{resource_id}\n{time_ms}".encode()).digest()
    return event_id_at(time_ms, int.from_bytes(digest[:10], "big"))


def lifecycle_event(
    *,
    action: str,
    resource_id: str,
    time_ms: int,
    details: Mapping[str, Any],
    actor: str,
    service_name: str,
    actor_type: str = "system",
    reason: str = "",
) -> LogRecordData:
    """The record of one lifecycle action; identical for identical arguments."""
    ns = time_ms * 1_000_000
    attrs: dict[str, Any] = {
        "audit.event.id": _event_id(action, resource_id, time_ms),
        "audit.action": action,
        "audit.category": _CATEGORY.get(action, "data_change"),
        "audit.outcome": "success",
        "audit.actor.id": actor,
        "audit.actor.type": actor_type,
        "audit.resource.type": "audit_log",
        "audit.resource.id": resource_id,
        "audit_log.lifecycle": orjson.dumps(dict(details), option=orjson.OPT_SORT_KEYS).decode(),
    }
    if reason:
        attrs["audit.reason"] = reason[:1000]
    return LogRecordData(
        attributes=attrs,
        resource={"service.name": service_name},
        time_unix_nano=ns,
        observed_time_unix_nano=ns,
        severity_number=9,
        severity_text="INFO",
        body=f"{action} {resource_id}",
        event_name="audit",
        scope_name=SCOPE_NAME,
    )
