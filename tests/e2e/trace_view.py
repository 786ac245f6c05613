"""Checks of the query API's trace view (``/api/v1/traces/{id}``) shared by the e2e tests.

:func:`assert_trace_story` waits until a trace shows the spans of the given services and
the given events, then checks the story a person reading it would rely on: one root span,
no span missing its parent, and every audit event under the span that was active when it
was emitted, in the service that emitted it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from tests.e2e.conftest import ReceiverProcess

__all__ = ["assert_trace_story", "get_trace", "wait_for", "walk"]


def wait_for(
    what: str, probe: Callable[[], Any], ok: Callable[[Any], bool], timeout_s: float
) -> Any:
    """Call ``probe`` until ``ok`` accepts its value; the value, or AssertionError on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}: {value}")
        time.sleep(0.5)


def get_trace(receiver: ReceiverProcess, trace_id: str) -> dict[str, Any] | None:
    """The trace view of ``trace_id``; None while nothing of it is stored.

    A 503 (the store did not answer in time, or the read could not be recorded in the
    query audit log) comes with Retry-After: it is returned as ``{"unavailable": body}``,
    which the waiting callers treat as "not yet" and show if it lasts.
    """
    request = urllib.request.Request(
        f"{receiver.query_url}/api/v1/traces/{trace_id}",
        headers={"Authorization": f"Bearer {receiver.reader_token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except urllib.error.HTTPError as err:
        if err.code == 404:  # nothing of this trace stored yet
            return None
        if err.code == 503:
            return {"unavailable": err.read().decode("utf-8", "replace")}
        raise


def walk(nodes: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """Every span node of a trace view's tree, parents before their children."""
    stack = list(nodes)
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node["children"])


def _complete(view: dict[str, Any] | None, services: set[str], event_ids: set[str]) -> bool:
    if view is None or "roots" not in view:
        return False
    nodes = list(walk(view["roots"]))
    placed = {ev["event"]["id"] for node in nodes for ev in node["events"]}
    return {n["span"]["service"] for n in nodes} >= services and placed >= event_ids


def assert_trace_story(
    receiver: ReceiverProcess,
    trace_id: str,
    event_ids: set[str],
    *,
    services: set[str],
    root: tuple[str, str],
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Wait for the trace view and check it; the view.

    ``root`` is the (service, span name) of the one root span; every service in
    ``services`` must have spans and events under them, and every id in ``event_ids``
    must sit under a span.
    """
    view: dict[str, Any] = wait_for(
        f"trace {trace_id} with spans of {sorted(services)} and events {sorted(event_ids)}",
        lambda: get_trace(receiver, trace_id),
        lambda v: _complete(v, services, event_ids),
        timeout_s,
    )
    assert view["trace_id"] == trace_id
    assert set(view["services"]) >= services
    assert not view["unattached"], f"events without their span: {view['unattached']}"
    # One trace, one root; every other span hangs below it.
    assert len(view["roots"]) == 1, [r["span"] for r in view["roots"]]
    top = view["roots"][0]["span"]
    assert (top["service"], top["name"]) == root, top
    nodes = list(walk(view["roots"]))
    assert not any(n["span"].get("missing_parent") for n in nodes)
    for node in nodes:
        for event in node["events"]:
            assert event["span"]["id"] == node["span"]["span_id"]
            assert event["trace"]["id"] == trace_id
            # Each service's events sit under that service's own spans.
            assert event["service"]["name"] == node["span"]["service"]
    services_with_events = {n["span"]["service"] for n in nodes if n["events"]}
    assert services_with_events >= services
    return view
