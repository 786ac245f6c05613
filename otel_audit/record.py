"""The neutral form of one OTLP log record, as every stage after decoding sees it.

The receiver decodes protobuf or OTLP/JSON into :class:`LogRecordData`; the emit helper and
the test helpers build it from SDK records. Attribute values are plain Python values
(``str``, ``bool``, ``int``, ``float``, ``bytes``, ``list``, ``dict``) exactly as sent: the
validator must not assume their types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class LogRecordData:
    """One log record with its resource and scope, decoded but not yet trusted."""

    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    time_unix_nano: int = 0
    observed_time_unix_nano: int = 0
    severity_number: int = 0
    severity_text: str = ""
    body: Any = None
    trace_id: str = ""
    """Lowercase hex, or empty when the record has no trace context."""
    span_id: str = ""
    flags: int = 0
    event_name: str = ""
    scope_name: str = ""
    scope_version: str = ""
    dropped_attributes_count: int = 0
    content_sha256: str | None = field(default=None, compare=False, repr=False)
    """The record's content hash when its decoder computed it (the native protobuf decoder
    does), else ``None``; see :func:`otel_audit.document.content_hash`. Not part of the wire
    form. A copy with changed content must clear it (``dataclasses.replace(record, ...,
    content_sha256=None)``)."""
    prepared: Any = field(default=None, compare=False, repr=False)
    """The receiver's write of this record when its decoder already did it (see
    ``receiver.ingest.prepare``), else ``None``. Not part of the wire form; a copy with changed
    content must clear it, as ``content_sha256``."""

    def as_wire_dict(self) -> dict[str, Any]:
        """What the emitter sent, as one JSON-able mapping (bytes kept as bytes)."""
        return {
            "attributes": self.attributes,
            "resource": self.resource,
            "time_unix_nano": self.time_unix_nano,
            "observed_time_unix_nano": self.observed_time_unix_nano,
            "severity_number": self.severity_number,
            "severity_text": self.severity_text,
            "body": self.body,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "flags": self.flags,
            "event_name": self.event_name,
            "scope_name": self.scope_name,
            "scope_version": self.scope_version,
        }
