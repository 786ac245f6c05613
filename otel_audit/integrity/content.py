"""The content hash of a record: SHA-256 of the RFC 8785 form of what the emitter sent.

``docs/hashing.md`` is the specification; this module is its Python implementation. The
value hashed is the record's wire form (``LogRecordData.as_wire_dict()``) as a JSON value:

- bytes are ``{"$bytes": <standard base64, padded>}``;
- a NaN or infinite double is ``{"$double": "NaN" | "Infinity" | "-Infinity"}`` (the
  protobuf JSON names; RFC 8785 has no number for them);
- a tuple is an array.

It is serialized by RFC 8785 with one extension that every record needs: integers are
written as their exact decimal digits at any magnitude (``time_unix_nano`` is beyond
2**53 for any time after 1970-04-15). Within +-(2**53 - 1) that is what RFC 8785 writes.

:func:`content_json_reference` writes it with the ``rfc8785`` library's string and number
forms and UTF-16 key order. ``orjson`` with sorted keys writes the same bytes (several
times faster) when :func:`content_fast_path_applies`, under the same conditions as the
leaf hash's fast path (:mod:`otel_audit.integrity.canonical`) except that integers may
have any magnitude ``orjson`` takes and bytes are allowed. The native decoder computes the
same hash for records without a double (``native/src/content_hash.rs``).
``tests/otel_audit/integrity/test_hash_spec.py`` proves the paths equal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from typing import Any

import orjson
import rfc8785

from otel_audit.integrity.errors import CanonicalizationError

__all__ = [
    "content_fast_path_applies",
    "content_json",
    "content_json_reference",
    "content_sha256",
    "content_value",
]

_FLOAT_FAST_MIN = 1e-5
_FLOAT_FAST_MAX = 1e15
_SORT = orjson.OPT_SORT_KEYS

_DOUBLE_NAMES = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _bytes_value(value: bytes) -> dict[str, str]:
    return {"$bytes": base64.b64encode(value).decode("ascii")}


def _double_value(value: float) -> dict[str, str]:
    return {"$double": "NaN" if value != value else _DOUBLE_NAMES[value]}


def content_value(value: Any) -> Any:
    """``value`` (a record's wire form) as the JSON value its content hash covers.

    Values with no JSON form (sets, objects, non-string keys) are returned as they are:
    :func:`content_json_reference` refuses them.
    """
    if isinstance(value, dict):
        return {k: content_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [content_value(v) for v in value]
    if isinstance(value, bytes):
        return _bytes_value(value)
    if isinstance(value, float) and not math.isfinite(value):
        return _double_value(value)
    return value


def _write(value: Any, out: list[bytes]) -> None:
    """RFC 8785 of ``value`` (a :func:`content_value`), integers exact, appended to ``out``."""
    if value is None or isinstance(value, (bool, str, float)):
        out.append(rfc8785.dumps(value))
    elif isinstance(value, int):
        out.append(str(int(value)).encode("ascii"))
    elif isinstance(value, list):
        out.append(b"[")
        for i, item in enumerate(value):
            if i:
                out.append(b",")
            _write(item, out)
        out.append(b"]")
    elif isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise CanonicalizationError("object keys must be strings")
        out.append(b"{")
        for i, key in enumerate(sorted(value, key=lambda k: k.encode("utf-16be", "surrogatepass"))):
            if i:
                out.append(b",")
            out.append(rfc8785.dumps(key))
            out.append(b":")
            _write(value[key], out)
        out.append(b"}")
    else:
        raise CanonicalizationError(f"unsupported type: {type(value).__name__}")


def content_json_reference(value: Any) -> bytes:
    """The bytes the content hash of ``value`` (a record's wire form) covers, from the
    reference implementation only (slow; for checks and for what the fast path declines).

    Raises :class:`CanonicalizationError` for a value outside the domain of the
    specification: lone surrogates, non-string keys, sets and other objects.
    """
    out: list[bytes] = []
    try:
        _write(content_value(value), out)
    except rfc8785.CanonicalizationError as exc:
        raise CanonicalizationError(f"no canonical JSON form: {exc}") from exc
    except RecursionError as exc:
        raise CanonicalizationError("value is nested too deeply for canonical JSON") from exc
    return b"".join(out)


def content_fast_path_applies(value: object) -> bool:
    """Whether ``orjson`` sorted-key output (bytes through ``{"$bytes": ...}``) is
    byte-identical to :func:`content_json_reference` for ``value``.

    Only exact ``dict``/``list``/``str``/``int``/``float``/``bool``/``bytes``/``None``
    qualify; integral floats, floats outside ``1e-5 <= |x| < 1e15`` (NaN and infinities
    among them) and keys with a character at or above U+E000 answer ``False``. (An
    integer beyond 64 bits makes ``orjson`` raise, and :func:`content_json` then uses the
    reference.)
    """
    pending: list[Any] = [value] if type(value) is dict or type(value) is list else [[value]]
    pop = pending.pop
    push = pending.append
    while pending:
        container = pop()
        if type(container) is dict:
            try:
                joined = "".join(container)
            except TypeError:
                return False
            # Below U+E000 (surrogates aside) code point order is UTF-16 code unit order.
            if not joined.isascii() and max(joined) >= "\ue000":
                return False
            container = container.values()
        for v in container:
            t = type(v)
            if t is str or t is int:
                continue
            if t is dict or t is list:
                push(v)
            elif t is float:
                # NaN and infinities fail the range test too.
                if v.is_integer() or not _FLOAT_FAST_MIN <= abs(v) < _FLOAT_FAST_MAX:
                    return False
            elif v is not None and t is not bool and t is not bytes:
                return False
    return True


def content_json(value: Any) -> bytes:
    """The bytes the content hash of ``value`` (a record's wire form) covers.

    Raises :class:`CanonicalizationError` outside the specification's domain (see
    :func:`content_json_reference`).
    """
    if content_fast_path_applies(value):
        try:
            return orjson.dumps(value, option=_SORT, default=_bytes_value)
        except (orjson.JSONEncodeError, TypeError):
            # Lone surrogates or nesting beyond orjson's limit: the reference decides.
            pass
    return content_json_reference(value)


def content_sha256(value: Any) -> str:
    """The content hash (lowercase SHA-256 hex) of ``value``, a record's wire form.

    A value outside the specification's domain, which no decoder produces (lone
    surrogates, non-string keys, sets and other objects: only code building records
    in-process can make them), is hashed in a fallback form rather than refused: Python's
    ``json`` with ``repr`` for what it cannot write, whose ``", "`` and ``": "``
    separators no canonical form has. Only what even that cannot write (keys of mixed
    types, cycles) raises ``TypeError`` or ``ValueError``.
    """
    try:
        data = content_json(value)
    except CanonicalizationError:
        data = json.dumps(value, sort_keys=True, default=repr, ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )
    return hashlib.sha256(data).hexdigest()
