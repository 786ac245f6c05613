"""The read limits and the tenant scope as plain logic (the HTTP behaviour is in
test_query_tenants.py against the real Elasticsearch)."""

from __future__ import annotations

import pytest

from indexer.query.api import _Cursors, _Limited, _Slots
from indexer.query.auth import Authenticator, RefusalLimiter, hash_token
from indexer.query.config import QueryConfig, QueryConfigError, TokenEntry
from indexer.query.filters import parse_event_filter, scope_filter, scope_query


def test_refusals_lock_an_address_out_for_the_rest_of_its_minute() -> None:
    limiter = RefusalLimiter(per_minute=2)
    assert limiter.refused("10.0.0.1", 100.0)
    assert limiter.retry_after("10.0.0.1", 100.5) == 0  # under the limit
    assert limiter.refused("10.0.0.1", 101.0)  # the last one answered and recorded
    assert limiter.retry_after("10.0.0.1", 102.0) == 58  # then locked out
    assert not limiter.refused("10.0.0.1", 102.0)  # a racing refusal past it: 429
    assert limiter.retry_after("10.0.0.2", 102.0) == 0  # other addresses are not affected
    assert limiter.retry_after("10.0.0.1", 160.0) == 0  # a new window
    assert limiter.refused("10.0.0.1", 160.5)


def test_refusal_table_is_bounded() -> None:
    limiter = RefusalLimiter(per_minute=1, max_addresses=3)
    for i in range(10):
        limiter.refused(f"10.0.0.{i}", 1.0)
    assert len(limiter._windows) == 3


def test_running_queries_are_capped_per_token_and_in_all() -> None:
    slots = _Slots(total=3, per_token=2)
    slots.acquire("alice")
    slots.acquire("alice")
    with pytest.raises(_Limited, match="already has 2 queries running"):
        slots.acquire("alice")
    slots.acquire("bob")
    with pytest.raises(_Limited, match="limit; try again"):
        slots.acquire("carol")
    slots.release("alice")
    slots.acquire("alice")


def test_open_cursors_are_capped_per_token_oldest_given_up_first() -> None:
    cursors = _Cursors(per_token=2, keep_alive_s=120)
    cursors.moved("alice", None, "pit-1", 0.0)
    cursors.moved("alice", None, "pit-2", 10.0)
    assert cursors.admit("alice", 20.0) == "pit-1"  # the oldest makes room
    cursors.moved("alice", None, "pit-3", 20.0)
    assert cursors.admit("bob", 20.0) is None
    cursors.moved("alice", "pit-2", None, 30.0)  # paged to its end
    assert cursors.admit("alice", 30.0) is None
    cursors.moved("alice", None, "pit-4", 30.0)
    assert cursors.admit("alice", 141.0) is None  # pit-3 expired at 140


def test_tenant_scope_intersects_what_was_asked() -> None:
    scope = frozenset({"acme", "initech"})
    plain = scope_filter(parse_event_filter({}), scope)
    assert plain is not None and plain.values["tenant"] == ("acme", "initech")
    asked = scope_filter(parse_event_filter({"tenant": ["globex", "acme"]}), scope)
    assert asked is not None and asked.values["tenant"] == ("acme",)
    assert scope_filter(parse_event_filter({"tenant": ["globex"]}), scope) is None
    unscoped = parse_event_filter({"tenant": ["globex"]})
    assert scope_filter(unscoped, None) is unscoped
    q = scope_query({"term": {"trace.id": "x"}}, scope)
    assert q["bool"]["filter"][1] == {"terms": {"organization.id": ["acme", "initech"]}}


def test_token_tenants_are_validated_and_reach_the_principal() -> None:
    token = TokenEntry(subject="acme-ops", sha256=hash_token("t"), tenants=("acme",))
    principal = Authenticator((token,)).authenticate("Bearer t")
    assert principal.tenants == frozenset({"acme"}) and principal.scoped
    everyone = TokenEntry(subject="ops", sha256=hash_token("u"))
    assert Authenticator((everyone,)).authenticate("Bearer u").tenants is None
    for bad in ((), ("*", "acme"), ("",)):
        with pytest.raises(QueryConfigError, match="tenants"):
            QueryConfig(tokens=(TokenEntry(subject="x", sha256=hash_token("v"), tenants=bad),))


def test_leading_wildcards_are_refused() -> None:
    from indexer.query.filters import QueryError

    with pytest.raises(QueryError, match="leading wildcard"):
        parse_event_filter({"action": ["*.delete"]})
    assert parse_event_filter({"action": ["user.*"]}).values["action"] == ("user.*",)
