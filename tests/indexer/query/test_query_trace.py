"""A trace across three services, sent by the real OTel SDK through the real receiver, read
back through ``GET /traces/{id}`` with every audit event under the span it happened in."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from elasticsearch import Elasticsearch
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from indexer.query.api import start_query_api
from indexer.query.auth import hash_token
from otel_audit import _logs_compat
from otel_audit.emit import AuditLogger
from receiver.config import load_config
from receiver.server import ReceiverServer, build_logs_consumer, build_spans_consumer
from tests.indexer.query.query_harness import TOKENS

pytestmark = pytest.mark.integration


class Service:
    """One service: its own tracer and logger providers exporting OTLP/HTTP to the receiver."""

    def __init__(self, name: str, base_url: str) -> None:
        self.tracers = TracerProvider(resource=Resource.create({"service.name": name}))
        self.tracers.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base_url}/v1/traces"))
        )
        self.logs = _logs_compat.sdk_logger_provider({"service.name": name})
        self.logs.add_log_record_processor(
            _logs_compat.batch_processor(
                OTLPLogExporter(endpoint=f"{base_url}/v1/logs"), schedule_delay_millis=100
            )
        )
        self.tracer = self.tracers.get_tracer("shop")
        self.audit = AuditLogger(self.logs)

    def event(self, action: str, resource_id: str, **kw: Any) -> str:
        return self.audit.emit(
            action=action,
            category="data_change",
            outcome="success",
            actor_id="u-42",
            actor_type="user",
            resource_type=action.split(".")[0],
            resource_id=resource_id,
            **kw,
        )

    def flush_and_close(self) -> None:
        assert self.tracers.force_flush(10_000)
        assert self.logs.force_flush(10_000)
        self.tracers.shutdown()
        self.logs.shutdown()


def _run_services(base_url: str) -> dict[str, Any]:
    """The three services handle one request; returns the ids to look for."""
    prop = TraceContextTextMapPropagator()
    gateway, orders, billing = (Service(n, base_url) for n in ("gateway", "orders", "billing"))
    where: dict[str, str] = {}  # event id -> span id it was emitted under
    spans: dict[str, str] = {}
    with gateway.tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as s1:
        ctx1 = s1.get_span_context()
        spans["gateway"] = format(ctx1.span_id, "016x")
        where[gateway.event("order.submit", "o-1")] = spans["gateway"]
        to_orders: dict[str, str] = {}
        prop.inject(to_orders)

    with orders.tracer.start_as_current_span(
        "orders.create", context=prop.extract(to_orders), kind=SpanKind.SERVER
    ) as s2:
        spans["orders"] = format(s2.get_span_context().span_id, "016x")
        where[orders.event("order.create", "o-1")] = spans["orders"]
        with orders.tracer.start_as_current_span("db insert", kind=SpanKind.CLIENT) as s3:
            s3.set_attribute("db.system", "postgresql")
            spans["db"] = format(s3.get_span_context().span_id, "016x")
            where[orders.event("order.persist", "o-1")] = spans["db"]
        to_billing: dict[str, str] = {}
        prop.inject(to_billing)

    with billing.tracer.start_as_current_span(
        "billing.charge", context=prop.extract(to_billing), kind=SpanKind.SERVER
    ) as s4:
        s4.set_attribute("http.request.method", "POST")
        s4.set_attribute("http.route", "/charges")
        spans["billing"] = format(s4.get_span_context().span_id, "016x")
        where[billing.event("invoice.create", "inv-9")] = spans["billing"]
        where[billing.event("payment.capture", "pay-3")] = spans["billing"]
        # An event under a span nobody exported: it must not be lost or misplaced.
        ghost = SpanContext(
            ctx1.trace_id, random.getrandbits(64), is_remote=False, trace_flags=TraceFlags(1)
        )
        stray = billing.event(
            "payment.audit", "pay-3", context=trace.set_span_in_context(NonRecordingSpan(ghost))
        )

    for svc in (gateway, orders, billing):
        svc.flush_and_close()
    return {
        "trace_id": format(ctx1.trace_id, "032x"),
        "where": where,
        "spans": spans,
        "stray": stray,
    }


def _walk(nodes: list[dict[str, Any]], parent: str = "") -> list[tuple[str, str, list[str]]]:
    out = []
    for node in nodes:
        sid = node["span"]["span_id"]
        out.append((sid, parent, [e["event"]["id"] for e in node["events"]]))
        out.extend(_walk(node["children"], sid))
    return out


def test_trace_across_three_services(clean_es: Elasticsearch, es_url: str, tmp_path: Path) -> None:
    conf = tmp_path / "otel-audit.yaml"
    conf.write_text(
        yaml.safe_dump(
            {
                "grpc_endpoint": "127.0.0.1:0",
                "http_endpoint": "127.0.0.1:0",
                "query_api_endpoint": "127.0.0.1:0",
                "es_url": es_url,
                "spool_dir": str(tmp_path / "spool"),
                "query": {
                    "tokens": [
                        {
                            "subject": "alice",
                            "sha256": hash_token(TOKENS["reader"]),
                            "roles": ["reader"],
                        }
                    ]
                },
                "spans": {"retention_days": 3},
            }
        )
    )
    config = load_config(conf, env={})

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        logs = build_logs_consumer(config)
        spans = build_spans_consumer(config, logs)
        server = ReceiverServer(config, logs, spans)
        await server.start()
        runner = await start_query_api(config, logs.consume_logs)
        api = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1"
        try:
            sent = await asyncio.to_thread(_run_services, f"http://127.0.0.1:{server.http_port}")
            headers = {"Authorization": f"Bearer {TOKENS['reader']}"}
            async with aiohttp.ClientSession(headers=headers) as http:
                deadline = time.monotonic() + 30
                while True:
                    async with http.get(f"{api}/traces/{sent['trace_id']}") as resp:
                        view = await resp.json() if resp.status == 200 else {}
                    if view.get("span_count") == 4 and view.get("event_count") == 6:
                        break
                    assert time.monotonic() < deadline, view
                    await asyncio.sleep(0.3)
        finally:
            await runner.cleanup()
            await server.shutdown(10)
        return sent, view

    sent, view = asyncio.run(scenario())
    assert view["services"] == ["billing", "gateway", "orders"]
    tree = _walk(view["roots"])
    s = sent["spans"]
    # Causal order, parents first: gateway -> orders -> (db, billing).
    assert [(sid, parent) for sid, parent, _ in tree] == [
        (s["gateway"], ""),
        (s["orders"], s["gateway"]),
        (s["db"], s["orders"]),
        (s["billing"], s["orders"]),
    ]
    placed = {eid: sid for sid, _, events in tree for eid in events}
    assert placed == sent["where"]
    assert [e["event"]["id"] for e in view["unattached"]] == [sent["stray"]]
    billing = view["roots"][0]["children"][0]["children"][1]["span"]
    assert billing["service"] == "billing" and billing["kind"] == "server"
    assert billing["attributes"]["http"]["route"] == "/charges"
    assert billing["duration_ns"] > 0
    meta = clean_es.indices.get_mapping(index="audit-spans-*")
    assert {m["mappings"]["_meta"]["retention_days"] for m in meta.values()} == {3}
