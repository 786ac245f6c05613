"""One trace, three languages: Python, Node.js and Go services through the real Collector.

A checkout starts in a Python service (this test, with the Python OTel SDK and
``otel_audit``), which calls the Node.js example service ``billing``
(``sdk/node/examples/billing.js``, the Node.js helper and SDK), which calls the Go example
service ``inventory`` (``sdk/go/examples/inventory``, the Go helper and SDK). The trace
context goes along in W3C ``traceparent`` headers; each service exports its logs and spans
over OTLP gRPC to the real Collector built from ``collector-config/``, which routes the
audit records to ``otel-audit serve``. Then:

- the query API's trace view of that one trace shows spans of all three services, one
  root, and each service's audit events under the very span that was active when that
  service emitted them;
- every valid event is stored exactly once with its trace, span and service;
- the event each helper emitted on purpose against the schema is in the dead-letter index,
  and the receiver's reasons are word for word the ones the helper reported in its own log.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from otel_audit.emit import AuditLogger
from tests.e2e.conftest import StartReceiver
from tests.e2e.trace_view import assert_trace_story, wait_for, walk
from tests.support.collector_build import CONFIG_DIR, MAIN_CONFIG, CollectorPorts
from tests.support.sdk_examples import (
    NODE_EXAMPLES,
    ExampleError,
    ExampleService,
    build_go_example,
    ensure_sdk_dependencies,
)

pytestmark = [pytest.mark.collector, pytest.mark.integration]

FILE_BACKEND = CONFIG_DIR / "testdata" / "backend-file.yaml"
SERVICES = {"storefront", "billing", "inventory"}


@pytest.fixture(scope="session")
def inventory_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go example service, built once per session (the helpers' dependencies first)."""
    try:
        ensure_sdk_dependencies()
        return build_go_example("inventory", tmp_path_factory.mktemp("go-examples"))
    except ExampleError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def start_example(tmp_path: Path) -> Iterator[Callable[..., ExampleService]]:
    """Factory: ``start_example(name, command, env)`` runs one example; stopped at teardown."""
    started: list[ExampleService] = []

    def start(name: str, command: list[str], env: dict[str, str]) -> ExampleService:
        service = ExampleService(name=name, command=command, work_dir=tmp_path, env=env)
        started.append(service)
        service.start()
        return service

    yield start
    for service in started:
        service.stop()


@dataclass
class Storefront:
    """The Python service: its own SDK providers and the helper, exporting to the Collector."""

    tracer_provider: TracerProvider
    logger_provider: LoggerProvider
    audit: AuditLogger

    @classmethod
    def create(cls, collector_grpc: str) -> Storefront:
        resource = Resource.create({"service.name": "storefront"})
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=collector_grpc, insecure=True),
                schedule_delay_millis=200,
            )
        )
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(
                OTLPLogExporter(endpoint=collector_grpc, insecure=True),
                schedule_delay_millis=200,
            )
        )
        return cls(tracer_provider, logger_provider, AuditLogger(logger_provider))

    def checkout(self, billing_url: str, user: str, order: str) -> tuple[str, str, list[str], Any]:
        """One checkout: (trace id, checkout span id, own event ids, billing's answer)."""
        tracer = self.tracer_provider.get_tracer("storefront")
        with tracer.start_as_current_span("checkout", kind=SpanKind.INTERNAL) as span:
            context = span.get_span_context()
            events = [
                self.audit.emit(
                    action="user.login",
                    category="authentication",
                    outcome="success",
                    actor_id=user,
                    actor_type="user",
                    client_address="203.0.113.7",
                ),
                self.audit.emit(
                    action="order.create",
                    category="data_change",
                    outcome="success",
                    actor_id=user,
                    actor_type="user",
                    resource_type="order",
                    resource_id=order,
                ),
            ]
            with tracer.start_as_current_span("POST billing/charge", kind=SpanKind.CLIENT):
                headers = {"Content-Type": "application/json"}
                propagate.inject(headers)  # W3C traceparent of the CLIENT span
                payload = {"user": user, "order": order, "sku": "sku-017", "bad": True}
                request = urllib.request.Request(
                    f"{billing_url}/charge",
                    data=json.dumps(payload).encode(),
                    headers=headers,
                    method="POST",
                )
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
        return format(context.trace_id, "032x"), format(context.span_id, "016x"), events, answer

    def shutdown(self) -> None:
        """Export everything still buffered, then stop both providers."""
        self.tracer_provider.force_flush()
        self.logger_provider.force_flush()
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()


def _docs(es: Elasticsearch, index: str, event_ids: list[str]) -> list[dict[str, Any]]:
    es.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
    resp = es.search(
        index=index,
        query={"terms": {"event.id": event_ids}},
        size=100,
        ignore_unavailable=True,
        allow_no_indices=True,
    )
    return [hit["_source"] for hit in resp["hits"]["hits"]]


def _helper_warnings(log: str) -> list[str]:
    """What a helper reported about invalid events in its service's JSON log."""
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [str(entry.get("error", "")) for entry in lines if "invalid audit event" in str(entry)]


def test_python_node_and_go_services_share_one_trace_with_their_events_under_their_spans(
    clean_es: Elasticsearch,
    start_receiver: StartReceiver,
    start_collector: Callable[..., Any],
    start_example: Callable[..., ExampleService],
    inventory_binary: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    # The services start while the receiver does: they only need the Collector's address.
    ports = CollectorPorts.pick_free()
    otlp_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ports.grpc}"}
    inventory = start_example("inventory", [str(inventory_binary)], otlp_env)
    billing = start_example(
        "billing",
        ["node", str(NODE_EXAMPLES / "billing.js"), "--inventory-url", inventory.url],
        otlp_env,
    )
    receiver = start_receiver()
    collector = start_collector(
        receiver.grpc_endpoint,
        configs=(MAIN_CONFIG, FILE_BACKEND),
        env={"OTEL_AUDIT_BACKEND_FILE": str(tmp_path / "backend.jsonl")},
        ports=ports,
    )
    storefront = Storefront.create(collector.otlp_grpc_endpoint)
    setup_s = time.monotonic() - started

    trace_id, checkout_span, python_events, answer = storefront.checkout(
        billing.url, user="u-1842", order="ord-20260042"
    )
    (go_answer,) = answer["downstream"]
    # Each service continued the one trace (W3C traceparent over HTTP).
    assert answer["trace_id"] == go_answer["trace_id"] == trace_id, answer
    # Stopping flushes every SDK: all spans and records are with the Collector now.
    storefront.shutdown()
    assert billing.stop() == 0, billing.log_tail()
    assert inventory.stop() == 0, inventory.log_tail()

    spans_of = {
        "storefront": checkout_span,
        "billing": answer["span_id"],
        "inventory": go_answer["span_id"],
    }
    events_of = {
        "storefront": python_events,
        "billing": answer["event_ids"],
        "inventory": go_answer["event_ids"],
    }
    valid = {e for ids in events_of.values() for e in ids}
    view = assert_trace_story(
        receiver, trace_id, valid, services=SERVICES, root=("storefront", "checkout")
    )
    flowing_s = time.monotonic() - started

    # Each service's events sit under the span that was active when it emitted them.
    where = {
        ev["event"]["id"]: (node["span"]["service"], node["span"]["span_id"])
        for node in walk(view["roots"])
        for ev in node["events"]
    }
    for service, ids in events_of.items():
        for event_id in ids:
            assert where[event_id] == (service, spans_of[service]), (service, event_id)
    # The chain of spans: checkout -> CLIENT -> billing SERVER -> CLIENT -> inventory SERVER.
    parent = {
        child["span"]["span_id"]: node["span"]["span_id"]
        for node in walk(view["roots"])
        for child in node["children"]
    }
    billing_client = parent[spans_of["billing"]]
    assert parent[billing_client] == checkout_span
    assert parent[parent[spans_of["inventory"]]] == spans_of["billing"]

    # Stored once each, with their service, trace and span.
    docs = _docs(clean_es, "audit-events-*", sorted(valid))
    assert sorted(d["event"]["id"] for d in docs) == sorted(valid)
    for doc in docs:
        service = doc["service"]["name"]
        assert doc["event"]["id"] in events_of[service]
        assert (doc["trace"]["id"], doc["span"]["id"]) == (trace_id, spans_of[service])

    # The deliberately invalid events: dead-lettered with the reasons the helper gave.
    invalid_of = {
        "billing": answer["invalid_event_ids"],
        "inventory": go_answer["invalid_event_ids"],
    }
    invalid = sorted(e for ids in invalid_of.values() for e in ids)
    assert len(invalid) == 2
    rejected = wait_for(
        "the invalid Node.js and Go events in audit-rejected-*",
        lambda: _docs(clean_es, "audit-rejected-*", invalid),
        lambda found: sorted(d["event"]["id"] for d in found) == invalid,
        30.0,
    )
    assert not _docs(clean_es, "audit-events-*", invalid)
    logs = {"billing": billing.log_tail(200), "inventory": inventory.log_tail(200)}
    for doc in rejected:
        service = doc["service"]["name"]
        assert doc["event"]["id"] in invalid_of[service] and doc["kind"] == "validation"
        said = "; ".join(f"{r['field']}: {r['message']}" for r in doc["reasons"])
        warnings = _helper_warnings(logs[service])
        assert any(w.endswith(f": {said}") for w in warnings), (said, warnings)

    with capsys.disabled():
        print(
            f"\npolyglot e2e: setup {setup_s:.1f} s, trace complete {flowing_s:.1f} s, "
            f"total {time.monotonic() - started:.1f} s"
        )
