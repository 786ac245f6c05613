"""The event filter model and its translation to the Elasticsearch query DSL.

User input never becomes query syntax: every filter is a structured ``term``, ``terms``,
``range``, ``prefix`` or ``wildcard`` clause whose value is the literal text given, and free
text goes through ``simple_query_string`` with every operator disabled except whitespace
splitting and quoted phrases. The only pattern character a user may use is ``*`` in
``action`` (``action=invoice.*``); ``?`` and ``\\`` in it are escaped.

:data:`FILTER_PARAMS` is the one list of filters: the request parser, the OpenAPI document
and the CLI flags are all derived from it.

Cursors are opaque to clients: base64url JSON holding the point-in-time id, the sort
values of the last hit returned, and the canonical filters, so the next page is exactly
the same search continued.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from otel_audit.document import format_ns
from otel_audit.schema import load_schema

__all__ = [
    "FILTER_PARAMS",
    "MAX_VALUES_PER_PARAM",
    "TENANT_FIELD",
    "Cursor",
    "EventFilter",
    "FilterParam",
    "QueryError",
    "decode_cursor",
    "encode_cursor",
    "events_sort",
    "parse_event_filter",
    "parse_limit",
    "parse_time",
    "scope_filter",
    "scope_query",
]

MAX_VALUES_PER_PARAM = 100
MAX_VALUE_CHARS = 1024
_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
_HEX16 = re.compile(r"^[0-9a-fA-F]{16}$")


class QueryError(ValueError):
    """A request parameter is invalid; ``param`` names it, ``status`` is the HTTP code."""

    def __init__(self, param: str, message: str, status: int = 400) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class FilterParam:
    """One filter of ``/events`` and ``/stats``."""

    name: str
    field: str
    """Stored field it filters on (empty for time bounds and free text)."""
    kind: str
    """``term`` (exact, repeatable), ``action`` (exact or ``*`` pattern), ``time``, ``text``."""
    description: str
    example: str
    enum: tuple[str, ...] = ()
    hex_len: int = 0
    """Ids that must be this many hex digits (trace and span ids)."""

    @property
    def repeatable(self) -> bool:
        return self.kind in ("term", "action")


def _enum(attribute: str) -> tuple[str, ...]:
    return load_schema().field(attribute).enum


FILTER_PARAMS: tuple[FilterParam, ...] = (
    FilterParam("actor", "user.id", "term", "Actor id (exact).", "u-1842"),
    FilterParam(
        "actor_type",
        "audit.actor.type",
        "term",
        "Actor type.",
        "user",
        enum=_enum("audit.actor.type"),
    ),
    FilterParam(
        "action",
        "event.action",
        "action",
        "Action, exact (`invoice.update`) or a pattern where `*` matches any characters "
        "(`invoice.*`); `*` is the only pattern character.",
        "invoice.*",
    ),
    FilterParam(
        "category",
        "audit.category",
        "term",
        "Audit category.",
        "data_change",
        enum=_enum("audit.category"),
    ),
    FilterParam(
        "outcome", "audit.outcome", "term", "Outcome.", "success", enum=_enum("audit.outcome")
    ),
    FilterParam("resource_type", "audit.resource.type", "term", "Resource type.", "invoice"),
    FilterParam("resource_id", "audit.resource.id", "term", "Resource id (exact).", "inv-7"),
    FilterParam("service", "service.name", "term", "Emitting service (service.name).", "billing"),
    FilterParam(
        "tenant",
        "organization.id",
        "term",
        "Tenant id. A token scoped to tenants only ever sees its own; asking for another "
        "tenant returns nothing.",
        "acme",
    ),
    FilterParam(
        "trace_id",
        "trace.id",
        "term",
        "Trace id (32 hex digits).",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        hex_len=32,
    ),
    FilterParam(
        "span_id", "span.id", "term", "Span id (16 hex digits).", "00f067aa0ba902b7", hex_len=16
    ),
    FilterParam("correlation_id", "audit.correlation_id", "term", "Correlation id.", "order-991"),
    FilterParam(
        "from",
        "",
        "time",
        "Events at or after this time: RFC 3339 (`2024-05-01T10:00:00Z`, up to nanoseconds), "
        "a date (`2024-05-01`, UTC midnight) or relative to now (`now-15m`; units s m h d w).",
        "now-24h",
    ),
    FilterParam("to", "", "time", "Events before this time (same formats as `from`).", "now"),
    FilterParam(
        "q",
        "",
        "text",
        "Free text over the message, reason, action, actor, resource and service. Words are "
        'ANDed, `"..."` quotes a phrase; every other character is literal text.',
        "refund approved",
    ),
)
_BY_NAME = {p.name: p for p in FILTER_PARAMS}

# Fields free text searches: text fields are analysed, keyword fields match whole words.
TEXT_FIELDS = (
    "message",
    "event.reason.text",
    "event.action",
    "user.id",
    "user.name",
    "audit.resource.id",
    "audit.resource.type",
    "service.name",
    "error.type",
)

_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE = re.compile(r"^now(?:(?P<sign>[-+])(?P<n>[0-9]{1,9})(?P<unit>[smhdw]))?$")
_RFC3339 = re.compile(
    r"^(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[Tt ](?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.(?P<frac>[0-9]{1,9}))?"
    r"(?P<tz>[Zz]|[+-][0-9]{2}:[0-9]{2})?)?$"
)


def parse_time(param: str, value: str, now_ns: int | None = None) -> int:
    """Unix nanoseconds of an RFC 3339 time, a date, or ``now[-+]N<unit>``."""
    value = value.strip()
    rel = _RELATIVE.match(value)
    if rel:
        now = time.time_ns() if now_ns is None else now_ns
        if rel["n"] is None:
            return now
        delta = int(rel["n"]) * _UNITS_S[rel["unit"]] * 1_000_000_000
        return now - delta if rel["sign"] == "-" else now + delta
    m = _RFC3339.match(value)
    if not m:
        raise QueryError(
            param,
            f"{value!r} is not a time: use RFC 3339 with a zone (2024-05-01T10:00:00Z), "
            "a date (2024-05-01) or now-15m",
        )
    if m["time"] is None:
        text = m["date"] + "T00:00:00+00:00"
    else:
        tz = m["tz"]
        if tz is None:
            raise QueryError(param, f"{value!r} has no time zone: add Z or +HH:MM")
        text = f"{m['date']}T{m['time']}{'+00:00' if tz in 'Zz' else tz}"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise QueryError(param, f"{value!r} is not a valid time ({exc})") from None
    frac = (m["frac"] or "").ljust(9, "0")
    secs = int(dt.astimezone(UTC).timestamp())
    ns = secs * 1_000_000_000 + int(frac or "0")
    if ns < 0:
        raise QueryError(param, f"{value!r} is before 1970")
    return ns


@dataclass(frozen=True, slots=True)
class EventFilter:
    """A validated filter. ``values`` holds the term filters by parameter name."""

    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    from_ns: int | None = None
    to_ns: int | None = None
    q: str = ""

    def canonical(self) -> dict[str, list[str]]:
        """The filter as query parameters, times absolute (for cursors and audit records)."""
        out: dict[str, list[str]] = {k: list(v) for k, v in sorted(self.values.items())}
        if self.from_ns is not None:
            out["from"] = [format_ns(self.from_ns)]
        if self.to_ns is not None:
            out["to"] = [format_ns(self.to_ns)]
        if self.q:
            out["q"] = [self.q]
        return out

    def clauses(self) -> list[dict[str, Any]]:
        """The ``bool.filter`` / ``bool.must`` clauses of this filter."""
        out: list[dict[str, Any]] = []
        for name, vals in sorted(self.values.items()):
            param = _BY_NAME[name]
            if param.kind == "action":
                out.append(_action_clause(param.field, vals))
            elif len(vals) == 1:
                out.append({"term": {param.field: vals[0]}})
            else:
                out.append({"terms": {param.field: list(vals)}})
        if self.from_ns is not None or self.to_ns is not None:
            rng: dict[str, Any] = {}
            if self.from_ns is not None:
                rng["gte"] = format_ns(self.from_ns)
            if self.to_ns is not None:
                rng["lt"] = format_ns(self.to_ns)
            out.append({"range": {"@timestamp": rng}})
        return out

    def query(self) -> dict[str, Any]:
        """The whole ``query`` object."""
        filters = self.clauses()
        must: list[dict[str, Any]] = []
        if self.q:
            must.append(
                {
                    "simple_query_string": {
                        # A lone "*" is special-cased to match everything by Elasticsearch;
                        # as a phrase it is the literal character like any other.
                        "query": '"*"' if self.q == "*" else self.q,
                        "fields": list(TEXT_FIELDS),
                        # Whitespace splits words and quotes make phrases; + - | * ~ ( )
                        # and the rest are plain characters, never operators.
                        "flags": "WHITESPACE|PHRASE",
                        "default_operator": "and",
                        "lenient": True,
                    }
                }
            )
        if not filters and not must:
            return {"match_all": {}}
        body: dict[str, Any] = {"filter": filters}
        if must:
            body["must"] = must
        return {"bool": body}


TENANT_FIELD = "organization.id"
"""Stored field of the tenant (``audit.tenant.id``) that read scopes apply to."""


def scope_filter(flt: EventFilter, tenants: frozenset[str] | None) -> EventFilter | None:
    """``flt`` limited to ``tenants`` (None: unlimited, returned as is).

    The ``tenant`` filter becomes the intersection of what was asked and what is allowed,
    so the scope travels everywhere the filter goes (Elasticsearch, the cold archive,
    stats). None when nothing can match (only other tenants were asked for): the caller
    answers empty without searching.
    """
    if tenants is None:
        return flt
    asked = flt.values.get("tenant")
    allowed = tuple(sorted(tenants)) if asked is None else tuple(t for t in asked if t in tenants)
    if not allowed:
        return None
    return replace(flt, values={**flt.values, "tenant": allowed})


def scope_query(query: dict[str, Any], tenants: frozenset[str] | None) -> dict[str, Any]:
    """A raw query (by id, by trace) limited to events of ``tenants``."""
    if tenants is None:
        return query
    return {"bool": {"filter": [query, {"terms": {TENANT_FIELD: sorted(tenants)}}]}}


def _escape_wildcard(pattern: str) -> str:
    return pattern.replace("\\", "\\\\").replace("?", "\\?")


def _action_clause(field_name: str, values: Iterable[str]) -> dict[str, Any]:
    exact: list[str] = []
    should: list[dict[str, Any]] = []
    for v in values:
        if "*" not in v:
            exact.append(v)
        elif v.endswith("*") and "*" not in v[:-1]:
            should.append({"prefix": {field_name: {"value": v[:-1]}}})
        else:
            should.append({"wildcard": {field_name: {"value": _escape_wildcard(v)}}})
    if exact:
        should.append(
            {"terms": {field_name: exact}} if len(exact) > 1 else {"term": {field_name: exact[0]}}
        )
    if len(should) == 1:
        return should[0]
    return {"bool": {"should": should, "minimum_should_match": 1}}


def _check_value(param: FilterParam, value: str) -> str:
    if len(value) > MAX_VALUE_CHARS:
        raise QueryError(param.name, f"longer than {MAX_VALUE_CHARS} characters")
    if value == "":
        raise QueryError(param.name, "empty value")
    if param.kind == "action" and value.startswith("*"):
        raise QueryError(
            param.name,
            f"{value!r} starts with '*': a leading wildcard scans every stored action; "
            "start the pattern with its first characters (invoice.*)",
        )
    if param.enum and value not in param.enum:
        raise QueryError(param.name, f"{value!r} is not one of {', '.join(param.enum)}")
    if param.hex_len:
        rx = _HEX32 if param.hex_len == 32 else _HEX16
        if not rx.match(value):
            raise QueryError(param.name, f"{value!r} is not {param.hex_len} hex digits")
        value = value.lower()
    return value


def parse_event_filter(
    params: Mapping[str, list[str]] | Iterable[tuple[str, str]],
    *,
    extra_allowed: Iterable[str] = (),
    now_ns: int | None = None,
) -> EventFilter:
    """Validate query parameters into an :class:`EventFilter`.

    ``params`` is a multi-mapping (name -> values) or (name, value) pairs. Names outside
    :data:`FILTER_PARAMS` and ``extra_allowed`` are errors, so a typo never silently
    widens a search.
    """
    pairs: list[tuple[str, str]] = []
    if isinstance(params, Mapping):
        for k, vs in params.items():
            pairs.extend((k, v) for v in vs)
    else:
        pairs = list(params)
    allowed_extra = set(extra_allowed)
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        if name in allowed_extra:
            continue
        if name not in _BY_NAME:
            known = ", ".join(sorted([*_BY_NAME, *allowed_extra]))
            raise QueryError(name, f"unknown parameter (known: {known})")
        grouped.setdefault(name, []).append(value)
    values: dict[str, tuple[str, ...]] = {}
    from_ns = to_ns = None
    q = ""
    now = time.time_ns() if now_ns is None else now_ns
    for name, vals in grouped.items():
        param = _BY_NAME[name]
        if not param.repeatable and len(vals) > 1:
            raise QueryError(name, "given more than once")
        if len(vals) > MAX_VALUES_PER_PARAM:
            raise QueryError(name, f"more than {MAX_VALUES_PER_PARAM} values")
        if param.kind == "time":
            ns = parse_time(name, vals[0], now)
            if name == "from":
                from_ns = ns
            else:
                to_ns = ns
        elif param.kind == "text":
            text = vals[0].strip()
            if len(text) > MAX_VALUE_CHARS:
                raise QueryError(name, f"longer than {MAX_VALUE_CHARS} characters")
            q = text
        else:
            values[name] = tuple(dict.fromkeys(_check_value(param, v) for v in vals))
    if from_ns is not None and to_ns is not None and from_ns >= to_ns:
        raise QueryError(
            "from",
            f"from ({format_ns(from_ns)}) must be before to ({format_ns(to_ns)})",
        )
    return EventFilter(values=values, from_ns=from_ns, to_ns=to_ns, q=q)


def parse_limit(raw: str | None, default: int, maximum: int) -> int:
    """The page size: an integer 1..``maximum``."""
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError("limit", f"{raw!r} is not an integer") from None
    if value < 1:
        raise QueryError("limit", f"must be at least 1, got {value}")
    if value > maximum:
        raise QueryError("limit", f"must be at most {maximum}, got {value}")
    return value


def events_sort() -> list[dict[str, Any]]:
    """Newest first; the event id breaks ties so the order is total and stable."""
    return [
        {"@timestamp": {"order": "desc", "format": "strict_date_optional_time_nanos"}},
        {"event.id": {"order": "asc"}},
    ]


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts."""

    pit_id: str
    search_after: list[Any]
    filters: dict[str, list[str]]


_CURSOR_VERSION = 1


def encode_cursor(cursor: Cursor) -> str:
    """The opaque token handed to clients."""
    raw = orjson.dumps(
        {
            "v": _CURSOR_VERSION,
            "pit": cursor.pit_id,
            "after": cursor.search_after,
            "f": cursor.filters,
        }
    )
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(token: str) -> Cursor:
    """Parse a token from :func:`encode_cursor`; anything else is a 400 :class:`QueryError`."""
    bad = QueryError("cursor", "not a cursor returned by this API (corrupt or truncated)")
    if not token or len(token) > 16_384:
        raise bad
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        data = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise bad from None
    if not isinstance(data, dict) or data.get("v") != _CURSOR_VERSION:
        raise bad
    pit, after, filters = data.get("pit"), data.get("after"), data.get("f")
    if not isinstance(pit, str) or not pit:
        raise bad
    if (
        not isinstance(after, list)
        or not 2 <= len(after) <= 3  # a point in time adds its _shard_doc tiebreak
        or not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in after)
    ):
        raise bad
    if not isinstance(filters, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
        for k, v in filters.items()
    ):
        raise bad
    return Cursor(pit_id=pit, search_after=after, filters=filters)
