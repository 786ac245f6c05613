"""Two ``otel-audit serve`` processes behind the real Collector (gRPC round_robin over a
name that resolves to both) on the three-node cluster: both take traffic, ``verify`` checks
both chains in one run, and the query API of either receiver sees every event."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.drill.harness import (
    EXPORT,
    LOAD_SERVICE,
    LoadGenerator,
    export_request,
    verify_all,
    wait_stored,
)
from tests.drill.proxy import Fault, FaultProxy
from tests.drill.scenarios import DrillContext, running_stack

pytestmark = [pytest.mark.drill, pytest.mark.integration, pytest.mark.collector]


def _all_event_ids(base_url: str, token: str) -> set[str]:
    ids: set[str] = set()
    cursor = None
    while True:
        # A cursor carries the first page's filters; the API refuses them beside it.
        params = {"limit": "500", **({"cursor": cursor} if cursor else {"service": LOAD_SERVICE})}
        request = urllib.request.Request(
            f"{base_url}/api/v1/events?{urllib.parse.urlencode(params)}",
            headers={"Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                page = json.load(response)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{request.full_url}: {exc.code} {exc.read()[:500]!r}") from None
        ids.update(event["event"]["id"] for event in page["events"])
        cursor = page.get("next_cursor")
        if not cursor:
            return ids


def test_two_receivers_share_the_load_and_every_chain_verifies(
    drill_context: DrillContext,
) -> None:
    ctx = drill_context
    with running_stack(ctx, "multi") as stack:
        load = LoadGenerator(stack.collector.otlp_grpc_endpoint, rate_per_s=400).start()
        time.sleep(3)
        load.stop()
        count, _ = wait_stored(ctx.es, load.acked, timeout_s=120)
        assert load.acked and load.acked <= count.ids
        assert count.duplicated == 0
        time.sleep(3)  # the sealers close their last blocks
        for receiver in stack.receivers:
            assert _all_event_ids(receiver.query_url, receiver.reader_token) == count.ids
        verified = verify_all(stack, ctx.es_url)
        # Both receivers sealed events: the Collector balanced over both.
        assert "2 chains" in verified.summary, verified.summary
        assert verified.ok, verified.summary


def _export(endpoint: str, body: bytes) -> None:
    """One export, retried on UNAVAILABLE as the Collector would."""
    import grpc

    with grpc.insecure_channel(endpoint) as channel:
        for attempt in range(20):
            try:
                channel.unary_unary(EXPORT)(body, timeout=30)
                return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 19:
                    raise
                time.sleep(0.5)


def test_an_event_delivered_to_two_receivers_verifies(drill_context: DrillContext) -> None:
    """The Collector retries a request on another receiver when the first answered too
    late (its timeout, a receiver killed after storing): the second receiver finds the
    events already stored (409, same content). Every chain must still verify."""
    ctx = drill_context
    with running_stack(ctx, "dup") as stack:
        # Each receiver seals something first, so audit-blocks exists and is searchable.
        for n, receiver in enumerate(stack.receivers):
            _export(receiver.grpc_endpoint, export_request("warm", n * 10, 10)[0])
        time.sleep(3)
        body, ids = export_request("dup-across-receivers", 0, 50)
        for receiver in stack.receivers:
            _export(receiver.grpc_endpoint, body)
        count, _ = wait_stored(ctx.es, set(ids), timeout_s=60)
        assert set(ids) <= count.ids
        assert count.duplicated == 0
        time.sleep(3)
        verified = verify_all(stack, ctx.es_url)
        assert verified.ok, verified.summary


def test_a_bulk_answered_too_late_still_verifies(drill_context: DrillContext) -> None:
    """Elasticsearch stores a _bulk but its answer comes after the receiver gave up on it
    (a slow cluster): nothing is lost or doubled and the chain verifies."""
    ctx = drill_context
    proxy = FaultProxy(ctx.upstreams())
    env = {"OTEL_AUDIT_BULK_TIMEOUT_S": "1"}
    try:
        with running_stack(ctx, "late", es_url=proxy.url, receivers=1, receiver_env=env) as stack:
            _export(stack.receivers[0].grpc_endpoint, export_request("warm", 0, 10)[0])
            time.sleep(3)
            body, ids = export_request("late-bulk", 0, 50)
            proxy.set_fault(Fault(latency_s=2.0))
            _export(stack.receivers[0].grpc_endpoint, body)
            proxy.set_fault(Fault())
            count, _ = wait_stored(ctx.es, set(ids), timeout_s=60)
            assert set(ids) <= count.ids
            assert count.duplicated == 0
            time.sleep(3)
            verified = verify_all(stack, ctx.es_url)
            assert verified.ok, verified.summary
    finally:
        proxy.close()
