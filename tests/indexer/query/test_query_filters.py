"""The filter model: parsing, the query DSL it builds, cursors, the trace tree (no server)."""

from __future__ import annotations

import json

import pytest

from indexer.query.auth import Authenticator, AuthError, hash_token
from indexer.query.cli import escape_control, render_trace
from indexer.query.config import QueryConfig, QueryConfigError, TokenEntry
from indexer.query.filters import (
    Cursor,
    QueryError,
    decode_cursor,
    encode_cursor,
    parse_event_filter,
    parse_time,
)
from indexer.query.stats import pick_interval
from indexer.query.traces import build_trace_view

NOW = 1_714_557_600 * 10**9  # 2024-05-01T10:00:00Z


def _dsl(params: dict[str, list[str]]) -> str:
    return json.dumps(parse_event_filter(params, now_ns=NOW).query(), sort_keys=True)


def test_only_structured_clauses_are_built() -> None:
    dsl = json.loads(_dsl({"actor": ["a OR b"], "action": ["invoice.*", "x?y*z", "user.login"]}))
    clauses = dsl["bool"]["filter"]
    assert {"term": {"user.id": "a OR b"}} in clauses
    action = next(c for c in clauses if "bool" in c)["bool"]["should"]
    assert {"prefix": {"event.action": {"value": "invoice."}}} in action
    assert {"wildcard": {"event.action": {"value": "x\\?y*z"}}} in action
    assert {"term": {"event.action": "user.login"}} in action
    dsl_text = _dsl({"q": ['a:b OR "c" /re/ ~2'], "actor": ["*"]})
    for forbidden in ('"query_string"', '"regexp"', '"script"', '"fuzzy"'):
        assert forbidden not in dsl_text


def test_free_text_has_operators_disabled() -> None:
    sqs = json.loads(_dsl({"q": ["refund -x | y*"]}))["bool"]["must"][0]["simple_query_string"]
    assert sqs["flags"] == "WHITESPACE|PHRASE"
    assert sqs["query"] == "refund -x | y*" and sqs["default_operator"] == "and"
    assert (
        json.loads(_dsl({"q": ["*"]}))["bool"]["must"][0]["simple_query_string"]["query"] == '"*"'
    )


def test_times() -> None:
    assert parse_time("from", "2024-05-01T10:00:00Z") == NOW
    assert parse_time("from", "2024-05-01T12:00:00.5+02:00") == NOW + 500_000_000
    assert parse_time("from", "2024-05-01T10:00:00.000000001Z") == NOW + 1
    assert parse_time("from", "2024-05-01") == NOW - 10 * 3600 * 10**9
    assert parse_time("from", "now-15m", NOW) == NOW - 900 * 10**9
    for bad in ("", "yesterday", "2024-05-01T10:00", "now-5y", "1714557600", "2024-02-30"):
        with pytest.raises(QueryError):
            parse_time("from", bad)


def test_relative_times_become_absolute_in_the_canonical_filter() -> None:
    flt = parse_event_filter({"from": ["now-1h"], "outcome": ["denied"]}, now_ns=NOW)
    assert flt.canonical() == {"outcome": ["denied"], "from": ["2024-05-01T09:00:00.000000000Z"]}
    assert parse_event_filter(flt.canonical()).canonical() == flt.canonical()


def test_parameter_errors_name_the_parameter() -> None:
    cases = {
        "from": {"from": ["2024-05-02"], "to": ["2024-05-01"]},
        "to": {"to": ["2024-05-01", "2024-05-02"]},
        "category": {"category": ["nope"]},
        "span_id": {"span_id": ["123"]},
        "bogus": {"bogus": ["1"]},
        "actor": {"actor": [""]},
    }
    for param, params in cases.items():
        with pytest.raises(QueryError) as info:
            parse_event_filter(params)
        assert info.value.param == param


def test_cursor_round_trip_and_tampering() -> None:
    c = Cursor("pit==", ["2024-05-01T10:00:00.000000001Z", "id-1", 7], {"actor": ["a"]})
    assert decode_cursor(encode_cursor(c)) == c
    token = encode_cursor(c)
    for bad in (token[:-5], token + "!!", "", "e30", "W10", "x" * 20_000):
        with pytest.raises(QueryError):
            decode_cursor(bad)


def test_auth_compares_hashes() -> None:
    auth = Authenticator(
        (
            TokenEntry("alice", hash_token("t1"), ("reader",)),
            TokenEntry("dash", hash_token("t2"), ("stats",)),
        )
    )
    assert auth.authorize("Bearer t1", "reader").subject == "alice"
    assert auth.authorize("bearer  t1 ", "stats").subject == "alice"
    for header, status in ((None, 401), ("Basic t1", 401), ("Bearer", 401), ("Bearer t3", 401)):
        with pytest.raises(AuthError) as info:
            auth.authorize(header, "reader")
        assert info.value.status == status
    with pytest.raises(AuthError) as info:
        auth.authorize("Bearer t2", "reader")
    assert info.value.status == 403 and info.value.subject == "dash"


def test_config_validation_names_the_key() -> None:
    with pytest.raises(QueryConfigError, match="max_limit"):
        QueryConfig(max_limit=20_000)
    with pytest.raises(QueryConfigError, match=r"tokens\[0\].sha256"):
        QueryConfig(tokens=(TokenEntry("a", "abc"),))
    with pytest.raises(QueryConfigError, match="roles"):
        QueryConfig(tokens=(TokenEntry("a", hash_token("x"), ("root",)),))


def test_interval_ladder() -> None:
    assert pick_interval(3600 * 10**9) == "30s"
    assert pick_interval(86400 * 10**9) == "30m"
    assert pick_interval(30 * 86400 * 10**9) == "6h"


def _span(sid: str, parent: str, start: str, service: str = "svc") -> dict[str, object]:
    return {
        "@timestamp": start,
        "trace": {"id": "t"},
        "span": {"id": sid, "name": f"op-{sid}", "kind": "server", "status": {"code": "unset"}},
        "parent": {"id": parent} if parent else {},
        "service": {"name": service},
        "event": {"duration": 1_000_000, "end": start},
    }


def _event(eid: str, sid: str, ts: str) -> dict[str, object]:
    return {"@timestamp": ts, "event": {"id": eid, "action": "a.b"}, "span": {"id": sid}}


def test_trace_tree_orders_parents_first_and_keeps_strays() -> None:
    spans = [
        _span("c2", "b", "2024-01-01T00:00:03Z"),
        _span("b", "a", "2024-01-01T00:00:01Z"),
        _span("c1", "b", "2024-01-01T00:00:02Z"),
        _span("a", "", "2024-01-01T00:00:00Z"),
        _span("orphan", "gone", "2024-01-01T00:00:05Z"),
        _span("x", "y", "2024-01-01T00:00:06Z"),  # a parent cycle
        _span("y", "x", "2024-01-01T00:00:07Z"),
    ]
    events = [
        _event("e2", "c1", "2024-01-01T00:00:02.5Z"),
        _event("e1", "a", "2024-01-01T00:00:00.5Z"),
    ]
    events.append(_event("e3", "nowhere", "2024-01-01T00:00:04Z"))
    view = build_trace_view("t", spans, events)

    order: list[tuple[str, int]] = []

    def walk(nodes: list[dict[str, object]]) -> None:
        for n in nodes:
            span = n["span"]
            assert isinstance(span, dict)
            order.append((span["span_id"], span["depth"]))
            walk(n["children"])  # type: ignore[arg-type]

    walk(view["roots"])
    assert order == [("a", 0), ("b", 1), ("c1", 2), ("c2", 2), ("orphan", 0), ("x", 0), ("y", 1)]
    assert view["roots"][1]["span"]["missing_parent"] is True
    assert [e["event"]["id"] for e in view["unattached"]] == ["e3"]
    assert view["roots"][0]["events"][0]["event"]["id"] == "e1"
    text = render_trace(view)
    assert "op-c1" in text and "e3" in text and "(parent not stored)" in text


def test_control_characters_are_escaped() -> None:
    assert escape_control("a\nb\x1b[31m\x7f\u2028") == "a\\nb\\x1b[31m\\x7f\\u2028"
    assert escape_control("plain ünïcode") == "plain ünïcode"
