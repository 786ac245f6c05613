"""The whole path, for real: demo services -> OTel SDK -> otelcol-audit -> receiver -> ES.

Three demo services (storefront -> billing -> inventory, W3C trace propagation) send their
logs and traces to the real Collector built from ``collector-config/``; the Collector
routes records that carry ``audit.action`` to ``otel-audit serve`` and everything else to a
JSON-lines file standing in for the usual backend. Then:

- every valid audit event is stored once, with the trace id of its checkout;
- every deliberately invalid one is in the dead-letter index instead;
- ordinary logs reach the backend file and never an audit index;
- the query API's trace view shows spans from all three services with each audit event
  under the span that was active when it was emitted;
- with the receiver stopped, the Collector keeps new events in its queue on disk and
  delivers each exactly once after the receiver is back on the same ports.
"""

from __future__ import annotations

import functools
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import ApiError, Elasticsearch

from demo.services import DemoCluster, start_demo_services
from tests.e2e.conftest import ReceiverProcess, StartReceiver
from tests.e2e.trace_view import assert_trace_story
from tests.e2e.trace_view import wait_for as _wait_for
from tests.support.collector_build import CONFIG_DIR, MAIN_CONFIG

pytestmark = [pytest.mark.collector, pytest.mark.integration]

FILE_BACKEND = CONFIG_DIR / "testdata" / "backend-file.yaml"
SERVICES = {"storefront", "billing", "inventory"}
# Bodies the demo gives its ordinary (non-audit) log records.
ORDINARY_PREFIXES = ("checkout started for ", "charging ord-")
# Delivery after an outage waits for the Collector's next retry: its backoff starts at
# 1 s and grows to at most 30 s (collector-config/otelcol-audit.yaml).
DELIVERY_TIMEOUT_S = 90.0


@dataclass
class Sent:
    """What the demo emitted, per checkout: event id -> trace id of its checkout."""

    trace_of: dict[str, str] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)
    traces: list[str] = field(default_factory=list)
    ordinary_logs: int = 0


def _run_checkouts(cluster: DemoCluster, numbers: Iterable[int], bad: set[int]) -> Sent:
    # A checkout returns only after every service has handled its part, so the events a
    # checkout emitted are exactly the ones added to the report while it ran.
    sent = Sent()
    report = cluster.report
    for n in numbers:
        valid_before, invalid_before = len(report.event_ids), len(report.invalid_event_ids)
        trace_id = cluster.checkout(n, with_violations=n in bad)
        sent.traces.append(trace_id)
        for event_id in report.event_ids[valid_before:]:
            sent.trace_of[event_id] = trace_id
        sent.invalid.extend(report.invalid_event_ids[invalid_before:])
    sent.ordinary_logs = report.ordinary_logs
    return sent


def _stored(es: Elasticsearch, index: str, event_ids: list[str]) -> list[dict[str, Any]]:
    """``_source`` of every document in ``index`` whose ``event.id`` is one of ``event_ids``."""
    try:
        es.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
        resp = es.search(
            index=index,
            query={"terms": {"event.id": event_ids}},
            size=10_000,
            ignore_unavailable=True,
            allow_no_indices=True,
        )
    except ApiError as exc:
        if exc.status_code != 503:
            raise
        return []  # a daily index just created: its shard is still starting; ask again
    return [hit["_source"] for hit in resp["hits"]["hits"]]


def _all_docs(es: Elasticsearch, index: str) -> list[dict[str, Any]]:
    es.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
    resp = es.search(index=index, query={"match_all": {}}, size=10_000, allow_no_indices=True)
    return [hit["_source"] for hit in resp["hits"]["hits"]]


def _counts(docs: list[dict[str, Any]]) -> Counter[str]:
    return Counter(doc["event"]["id"] for doc in docs)


def _assert_stored_once(es: Elasticsearch, sent: Sent, timeout_s: float) -> None:
    ids = list(sent.trace_of)
    docs = _wait_for(
        f"{len(ids)} audit events in audit-events-*",
        lambda: _stored(es, "audit-events-*", ids),
        lambda found: set(_counts(found)) >= set(ids),
        timeout_s,
    )
    counts = _counts(docs)
    duplicated = {i: c for i, c in counts.items() if c != 1}
    assert not duplicated, f"events stored more than once: {duplicated}"
    for doc in docs:
        event_id = doc["event"]["id"]
        assert doc["trace"]["id"] == sent.trace_of[event_id], (
            f"event {event_id} ({doc['event']['action']}) carries trace {doc['trace']['id']}, "
            f"its checkout was trace {sent.trace_of[event_id]}"
        )
        assert doc["service"]["name"] in SERVICES


def _backend_records(path: Path) -> tuple[list[str], int]:
    """Log bodies in the file backend, and how many of its log records are audit records."""
    bodies: list[str] = []
    audit_records = 0
    if not path.exists():
        return bodies, audit_records
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        for resource_logs in json.loads(line).get("resourceLogs", []):
            for scope_logs in resource_logs.get("scopeLogs", []):
                for record in scope_logs.get("logRecords", []):
                    bodies.append(str(record.get("body", {}).get("stringValue", "")))
                    keys = {a.get("key") for a in record.get("attributes", [])}
                    audit_records += "audit.action" in keys
    return bodies, audit_records


def _ordinary(bodies: list[str]) -> list[str]:
    return [b for b in bodies if b.startswith(ORDINARY_PREFIXES)]


def _sealed_block(receiver: ReceiverProcess, event_id: str) -> dict[str, Any] | None:
    """The sealed block the query API reports for ``event_id`` (None until it is sealed)."""
    request = urllib.request.Request(
        f"{receiver.query_url}/api/v1/events/{event_id}",
        headers={"Authorization": f"Bearer {receiver.reader_token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        block: dict[str, Any] | None = json.loads(response.read())["block"]
        return block


def test_demo_traffic_through_the_collector_is_stored_once_and_survives_an_outage(
    clean_es: Elasticsearch,
    start_receiver: StartReceiver,
    start_collector: Callable[..., Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    es = clean_es
    receiver = start_receiver()
    backend_file = tmp_path / "backend.jsonl"
    collector = start_collector(
        receiver.grpc_endpoint,
        configs=(MAIN_CONFIG, FILE_BACKEND),
        env={"OTEL_AUDIT_BACKEND_FILE": str(backend_file)},
    )
    setup_s = time.monotonic() - started

    # -- 20 checkouts, three of them with deliberate schema violations --------------------
    # (the demo's login fails when n % 11 == 5, before a violation could be emitted)
    bad = {2, 9, 17}
    with start_demo_services(collector.otlp_grpc_endpoint, "grpc", ordinary_logs=True) as demo:
        first = _run_checkouts(demo, range(20), bad=bad)
    # Leaving the block flushed every SDK provider: the Collector holds it all now.
    assert len(first.trace_of) >= 40 and len(first.invalid) == 2 * len(bad)

    _assert_stored_once(es, first, timeout_s=60.0)

    rejected = _wait_for(
        "the invalid events in audit-rejected-*",
        lambda: _stored(es, "audit-rejected-*", first.invalid),
        lambda found: set(_counts(found)) >= set(first.invalid),
        30.0,
    )
    assert all(c == 1 for c in _counts(rejected).values()), _counts(rejected)
    assert all(doc["kind"] == "validation" and doc["reasons"] for doc in rejected)
    assert not _stored(es, "audit-events-*", first.invalid)

    # Checkout 3 goes through all three services (login ok, charge allowed, in stock).
    full = first.traces[3]
    assert_trace_story(
        receiver,
        full,
        {e for e, t in first.trace_of.items() if t == full},
        services=SERVICES,
        root=("storefront", "checkout"),
    )
    # Stored events are sealed into signed blocks behind the write.
    for event_id in [e for e, t in first.trace_of.items() if t == full]:
        _wait_for(
            f"a sealed block holding {event_id}",
            functools.partial(_sealed_block, receiver, event_id),
            lambda block: block is not None,
            30.0,
        )
    flowing_s = time.monotonic() - started

    # -- outage: the receiver is away, the Collector queues on disk -----------------------
    assert receiver.stop() == 0, receiver.log_tail()
    outage_started = time.monotonic()
    with start_demo_services(collector.otlp_grpc_endpoint, "grpc", ordinary_logs=True) as demo:
        during = _run_checkouts(demo, range(100, 110), bad=set())
    assert len(during.trace_of) >= 20
    assert collector.is_running()
    time.sleep(2.0)  # the receiver stays away across a few of the Collector's retries
    assert not _stored(es, "audit-events-*", list(during.trace_of)), "stored during the outage"
    receiver.start()
    _assert_stored_once(es, during, timeout_s=DELIVERY_TIMEOUT_S)
    recovery_s = time.monotonic() - outage_started
    # The first phase is still stored exactly once (no replay duplicated anything).
    again = _counts(_stored(es, "audit-events-*", list(first.trace_of)))
    assert set(again) == set(first.trace_of) and set(again.values()) == {1}, again

    # -- ordinary logs: in the backend file, never in an audit index ----------------------
    expected_ordinary = first.ordinary_logs + during.ordinary_logs
    bodies, audit_in_backend = _wait_for(
        f"{expected_ordinary} ordinary log records in the backend file",
        lambda: _backend_records(backend_file),
        lambda got: len(_ordinary(got[0])) >= expected_ordinary,
        30.0,
    )
    assert len(_ordinary(bodies)) == expected_ordinary
    assert audit_in_backend == 0, "audit records leaked to the ordinary backend"
    audit_docs = _all_docs(es, "audit-events-*,audit-rejected-*")
    leaked = [d for d in audit_docs if any(p in json.dumps(d) for p in ORDINARY_PREFIXES)]
    assert not leaked, f"ordinary logs reached an audit index: {leaked[:3]}"

    total_s = time.monotonic() - started
    with capsys.disabled():
        print(
            f"\ne2e: setup {setup_s:.1f} s, 20 checkouts stored + trace view {flowing_s:.1f} s, "
            f"outage to recovered {recovery_s:.1f} s, total {total_s:.1f} s"
        )
