"""The neutral form of one OTLP span, as the span store sees it.

:mod:`receiver.otlp.decode_traces` turns protobuf or OTLP/JSON trace exports into
:class:`SpanData` lists; a spans consumer stores them so that audit events can be linked
to the traces they happened in. Ids are lowercase hex (``""`` when absent); times are
Unix nanoseconds; ``kind`` and ``status_code`` are the OTLP enum numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SpanData"]


@dataclass(slots=True)
class SpanData:
    """One span with its resource and scope, decoded but not yet trusted."""

    trace_id: str = ""
    span_id: str = ""
    parent_span_id: str = ""
    """Empty for a root span."""
    name: str = ""
    kind: int = 0
    """``SpanKind``: 0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer."""
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0
    status_code: int = 0
    """``Status.StatusCode``: 0 unset, 1 ok, 2 error."""
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    """Shared by every span of one ResourceSpans: treat as read-only."""
    scope_name: str = ""
    scope_version: str = ""
    trace_state: str = ""
    flags: int = 0
