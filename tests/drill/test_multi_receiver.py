"""Two ``otel-audit serve`` processes behind the real Collector (gRPC round_robin over a
name that resolves to both) on the three-node cluster: both take traffic, ``verify`` checks
both chains in one run, and the query API of either receiver sees every event."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

import pytest

from tests.drill.harness import LoadGenerator, verify_all, wait_stored
from tests.drill.scenarios import DrillContext, running_stack

pytestmark = [pytest.mark.drill, pytest.mark.integration, pytest.mark.collector]


def _all_event_ids(base_url: str, token: str) -> set[str]:
    ids: set[str] = set()
    cursor = None
    while True:
        params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
        request = urllib.request.Request(
            f"{base_url}/api/v1/events?{urllib.parse.urlencode(params)}",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            page = json.load(response)
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
        ok, summary = verify_all(stack, ctx.es_url)
        assert ok, summary
        # Both receivers sealed events: the Collector balanced over both.
        assert "2 chains" in summary, summary
        for receiver in stack.receivers:
            assert _all_event_ids(receiver.query_url, receiver.reader_token) == count.ids
