"""The otel-audit receiver's native OTLP logs decoder (see native/README.md)."""

from collections.abc import Callable
from typing import TypeVar

_R = TypeVar("_R")

__version__: str

class DecodeError(ValueError):
    """The body is not a serialized ExportLogsServiceRequest."""

def decode_logs(
    body: bytes, record_factory: Callable[..., _R], /
) -> tuple[list[_R], list[_R], list[str]]:
    """Decode a serialized ExportLogsServiceRequest into (records, rejected, reasons).

    Each record is ``record_factory(*fields)``, fields in the order of
    ``receiver.decode._RECORD_FIELDS``, the last one the record's content hash (hex, as
    ``otel_audit.document.content_hash`` computes it) or None for a record holding a double;
    raises DecodeError for an invalid body.
    """
