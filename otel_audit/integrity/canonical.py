"""RFC 8785 (JCS) canonical JSON of stored event documents, and their leaf hashes.

``docs/hashing.md`` specifies the bytes; this module is their Python implementation.

The reference is the ``rfc8785`` library (~50 us per audit document). ``orjson`` with
sorted keys produces the same bytes (~2 us) for most documents, but not for all:

- JCS orders object keys by UTF-16 code units, ``orjson`` by code points. The two only
  disagree when one key has a character above U+FFFF where another has one in
  U+E000..U+FFFF, so keys that are ASCII, or have nothing at or above U+E000, are safe.
- JCS prints numbers as ECMAScript does: ``1.0`` is ``1``, ``-0.0`` is ``0``, ``1e20``
  is ``100000000000000000000`` and ``1.5e-6`` is ``0.0000015``; ``orjson`` writes
  ``1.0``, ``-0.0``, ``1e+20`` and ``1.5e-6``. Both print the same shortest
  round-trip digits in plain notation for non-integral floats with
  ``1e-5 <= |x| < 1e15``; every other float goes to the reference.
- Integers beyond +-(2**53 - 1) are outside I-JSON; ``orjson`` would print them.

:func:`canonical_json` walks the value once to decide (:func:`fast_path_applies`); the
property tests in ``tests/otel_audit/integrity`` compare both paths over the whole value
domain. Values outside JCS entirely (NaN, infinities, big integers, lone surrogates,
non-string keys, other types) raise :class:`CanonicalizationError`: documents keep big
integers as strings upstream.

:func:`leaf_hash_of_event` is the fast form for stored event documents, which the sealer
and the verifier hash by the million: it only walks the parts of a document where the
builder lets free-form values in.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import orjson
import rfc8785

from otel_audit.integrity.errors import CanonicalizationError
from otel_audit.integrity.merkle import leaf_hash

__all__ = [
    "DEFAULT_EXCLUDE",
    "MAX_SAFE_INTEGER",
    "canonical_json",
    "canonical_json_reference",
    "document_for_hashing",
    "fast_path_applies",
    "leaf_hash_of_document",
    "leaf_hash_of_event",
]

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest magnitude of an integer that I-JSON (and so JCS) can carry."""

DEFAULT_EXCLUDE: tuple[str, ...] = ("integrity",)
"""Top-level fields left out of a document's leaf hash: they describe the seal itself."""

_FLOAT_FAST_MIN = 1e-5
_FLOAT_FAST_MAX = 1e15
_SORT = orjson.OPT_SORT_KEYS


def fast_path_applies(value: object) -> bool:
    """Whether ``orjson`` sorted-key output is byte-identical to RFC 8785 for ``value``.

    Only exact ``dict``/``list``/``str``/``int``/``float``/``bool``/``None`` qualify;
    anything unusual (subclasses, tuples, big integers, most integral or extreme floats,
    keys with characters at or above U+E000) answers ``False`` and goes to the reference.
    """
    # Hot loop: one pass, no per-value function call; strings (most values) exit first.
    pending: list[Any] = [value] if type(value) is dict or type(value) is list else [[value]]
    pop = pending.pop
    push = pending.append
    while pending:
        container = pop()
        if type(container) is dict:
            try:
                joined = "".join(container)
            except TypeError:
                return False  # a non-string key: the reference raises the clear error
            if not joined.isascii() and max(joined) >= "\ue000":
                return False
            container = container.values()
        for v in container:
            t = type(v)
            if t is str:
                continue
            if t is dict or t is list:
                push(v)
            elif t is int:
                if not -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER:
                    return False
            elif t is float:
                # NaN and infinities fail the range test too.
                if v.is_integer() or not _FLOAT_FAST_MIN <= abs(v) < _FLOAT_FAST_MAX:
                    return False
            elif v is not None and t is not bool:
                return False
    return True


def canonical_json_reference(value: object) -> bytes:
    """RFC 8785 bytes from the reference implementation only (slow; for checks)."""
    try:
        return bytes(rfc8785.dumps(value))  # type: ignore[arg-type]
    except rfc8785.IntegerDomainError as exc:
        raise CanonicalizationError(
            f"{exc}; integers beyond +-(2**53-1) must be stored as strings"
        ) from exc
    except rfc8785.FloatDomainError as exc:
        raise CanonicalizationError(f"{exc} (JSON has no NaN or infinity)") from exc
    except rfc8785.CanonicalizationError as exc:
        raise CanonicalizationError(f"no canonical JSON form: {exc}") from exc
    except RecursionError as exc:
        raise CanonicalizationError("value is nested too deeply for canonical JSON") from exc


def canonical_json(value: object) -> bytes:
    """Return the RFC 8785 canonical JSON bytes of ``value``.

    Uses ``orjson`` when :func:`fast_path_applies` proves it identical, else the
    ``rfc8785`` reference. Raises :class:`CanonicalizationError` for values JCS cannot
    represent.
    """
    if fast_path_applies(value):
        try:
            return orjson.dumps(value, option=_SORT)
        except (orjson.JSONEncodeError, TypeError):
            # Lone surrogates or nesting beyond orjson's limit: let the reference
            # decide, which either succeeds or raises the clear error.
            pass
    return canonical_json_reference(value)


def document_for_hashing(
    doc: Mapping[str, Any], exclude: Collection[str] = DEFAULT_EXCLUDE
) -> dict[str, Any]:
    """The part of a stored document that its leaf hash covers (a shallow copy)."""
    if not isinstance(doc, Mapping):
        raise CanonicalizationError(
            f"an event document must be an object, got {type(doc).__name__}"
        )
    return {k: v for k, v in doc.items() if k not in exclude}


def leaf_hash_of_document(
    doc: Mapping[str, Any], exclude: Collection[str] = DEFAULT_EXCLUDE
) -> bytes:
    """Merkle leaf hash of a stored event document.

    ``SHA-256(0x00 || JCS(doc without the top-level fields in exclude))``; by default
    the ``integrity`` field, which records the seal, is excluded.
    """
    return leaf_hash(canonical_json(document_for_hashing(doc, exclude)))


def _flat_applies(value: object) -> bool:
    """:func:`fast_path_applies` for the usual free-form part: a flat object of scalars.

    Anything else (nested values, floats, unusual keys) gets the general walk.
    """
    if type(value) is not dict:
        return fast_path_applies(value)
    for v in value.values():
        t = type(v)
        if t is str or t is bool or v is None:
            continue
        if t is int and -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER:
            continue
        return fast_path_applies(value)
    try:
        return "".join(value).isascii() or fast_path_applies(value)
    except TypeError:
        return False  # a non-string key: the exact path raises the clear error


def _free_form_parts(doc: dict[str, Any]) -> tuple[object, dict[str, Any] | None] | None:
    """The free-form values of an event document, or None when it is not shaped like one."""
    audit = doc.get("audit")
    if type(audit) is not dict:
        return None
    origin = audit.get("origin")
    if origin is not None and type(origin) is not dict:
        return None
    return (audit.get("extra"), origin)


def leaf_hash_of_event(
    doc: dict[str, Any], sorted_json: bytes | None = None, *, plain: bool = False
) -> bytes:
    """:func:`leaf_hash_of_document` of a stored event document, without walking all of it.

    :func:`otel_audit.document.build_document` writes values that may be floats, or keys
    that may sort differently under RFC 8785, only below ``audit.extra`` and
    ``audit.origin`` (the emitter's free-form attributes); everywhere else it writes
    strings, lists of strings and small integers, for which ``orjson`` with sorted keys
    already prints RFC 8785. So when :func:`fast_path_applies` accepts those two subtrees,
    the leaf is the hash of the sorted-key bytes (``sorted_json`` when the caller has
    them: ``orjson.dumps(doc, option=OPT_SORT_KEYS)``); otherwise the exact path decides.
    A property test holds this equal to the exact leaf for every document the builder can
    produce.

    ``plain=True`` is the builder's word that those two subtrees are plain (see
    :func:`otel_audit.document.build_document_and_plainness`): with ``sorted_json`` the
    checks are then skipped.

    For a document that did not come from the builder (an edited one read back by the
    verifier), the bytes hashed are still a faithful JSON encoding of that document, so the
    result can only equal a sealed leaf if the document equals the sealed one: an edit is
    never hidden, and an unedited document always matches.
    """
    if type(doc) is not dict or "integrity" in doc:
        return leaf_hash_of_document(doc)
    if plain and sorted_json is not None:
        return leaf_hash(sorted_json)
    parts = _free_form_parts(doc)
    if parts is None:
        return leaf_hash_of_document(doc)
    extra, origin = parts
    if extra is not None and not _flat_applies(extra):
        return leaf_hash_of_document(doc)
    if origin is not None:
        # The builder writes {"resource": {...}}: check the inner object directly.
        if len(origin) == 1 and "resource" in origin:
            plain = _flat_applies(origin["resource"])
        else:
            plain = fast_path_applies(origin)
        if not plain:
            return leaf_hash_of_document(doc)
    if sorted_json is None:
        try:
            sorted_json = orjson.dumps(doc, option=_SORT)
        except (orjson.JSONEncodeError, TypeError):
            return leaf_hash_of_document(doc)
    return leaf_hash(sorted_json)
