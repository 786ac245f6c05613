"""The otel-audit receiver's native OTLP logs decoder (see native/README.md)."""

from collections.abc import Callable
from typing import Any, TypeVar

_R = TypeVar("_R")

__version__: str

class DecodeError(ValueError):
    """The body is not a serialized ExportLogsServiceRequest."""

class Plan:
    """A schema's settings for preparing writes (see receiver/ingest/prepare.py)."""

    def __init__(self, settings: dict[str, Any], leaf: bool, /) -> None: ...
    @property
    def leaf(self) -> bool:
        """Whether prepared writes carry their Merkle leaf hash."""

def decode_logs(
    body: bytes,
    record_factory: Callable[..., _R],
    plan: Plan | None = None,
    received_ns: int = 0,
    prepared_factory: Callable[[Any, int], _R] | None = None,
) -> tuple[list[_R], list[_R], list[str]]:
    """Decode a serialized ExportLogsServiceRequest into (records, rejected, reasons).

    Each record is ``record_factory(*fields)``, fields in the order of
    ``receiver.otlp.decode._RECORD_FIELDS``: the record's content hash (hex, as
    ``otel_audit.document.content_hash`` computes it) or None for a record holding a
    double, then, with a ``plan``, its prepared write (``receiver.ingest.prepare.Prepared``) or
    None. With a ``prepared_factory`` a prepared record is instead
    ``prepared_factory(prepared, position)``, its position in ``records``, and none of
    its fields is built. Raises DecodeError for an invalid body.
    """

def journal_lines(
    index_names: list[str],
    event_ids: list[str],
    leaf_hashes: list[bytes],
    timestamps: list[str],
    start: int,
    /,
) -> tuple[bytes, list[int]]:
    """The sealer's journal lines for these entries (``receiver.sealing.state.Journal``) and
    the offset just past each, counted from ``start``."""

def merkle_extend(
    size: int, hashes: list[bytes], leaves: list[bytes], /
) -> tuple[list[bytes], int]:
    """Append ``leaves`` to a compact range of ``size`` leaves with subtree roots
    ``hashes``: (the new roots, how many leaves went in). Stops at the first leaf that is
    not 32 bytes of ``bytes``."""

_Column = tuple[bytes, bytes, bytes | None, int]

def archive_page(
    body: bytes, fields: list[str], /
) -> tuple[list[str], list[_Column], list[bytes], list[tuple[int, bytes]], bytes | None]:
    """One page of a ``_search`` response for the archive: (the hits' ids, Arrow buffers
    of the id, timestamp, each field, leaf-hash prefix, source and leaf-hash columns, the
    leaf hashes, the (position, raw ``_source``) of the hits left to Python, the raw JSON
    of the last hit's ``sort``). Raises ValueError when the body is not a search response."""

def leaf_hashes(offsets: bytes, data: bytes, count: int, /) -> bytes:
    """``SHA-256(0x00 || value)`` of each value of an Arrow binary column (its ``offsets``
    and ``data`` buffers, ``count`` values), concatenated. ValueError for offsets that do
    not describe ``data``."""
