"""`otel-audit serve` as a process, with the real ingest pipeline and the real Elasticsearch.

What the receiver promises its clients, checked from outside: the OTel SDK exporters
(gRPC and HTTP/protobuf) and hand-built OTLP/JSON requests are stored; a mixed batch gets
the exact partial_success; a repeated request is stored once; and a receiver killed with
SIGKILL mid-stream loses no acknowledged event and duplicates none after restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from elasticsearch import Elasticsearch
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from otel_audit.emit import new_event_id
from tests.support.collector_build import free_port
from tests.support.front_harness import audit_attributes, logs_request

pytestmark = pytest.mark.integration


class Serve:
    """One ``otel-audit serve`` process on fixed free ports, restartable on the same spool."""

    def __init__(self, es_url: str, work: Path) -> None:
        self.grpc_port, self.http_port, self.query_port = (free_port() for _ in range(3))
        self.work = work
        self.env = dict(os.environ)
        self.env.update(
            {
                "OTEL_AUDIT_ES_URL": es_url,
                "OTEL_AUDIT_GRPC_ENDPOINT": f"127.0.0.1:{self.grpc_port}",
                "OTEL_AUDIT_HTTP_ENDPOINT": f"127.0.0.1:{self.http_port}",
                "OTEL_AUDIT_QUERY_API_ENDPOINT": f"127.0.0.1:{self.query_port}",
                "OTEL_AUDIT_SPOOL_DIR": str(work / "spool"),
                "OTEL_AUDIT_INTEGRITY__STATE_DIR": str(work / "integrity"),
                "OTEL_AUDIT_SHUTDOWN_TIMEOUT_S": "10",
            }
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        log = open(self.work / "serve.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otel_audit.cli", "serve"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_tail()
            try:
                with urllib.request.urlopen(self.http_url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.3)
        raise AssertionError("receiver not ready:\n" + self.log_tail())

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def log_tail(self) -> str:
        path = self.work / "serve.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture
def serve(es_url: str, clean_es: None, tmp_path: Path) -> Iterator[Serve]:
    proc = Serve(es_url, tmp_path)
    proc.start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            assert proc.stop() == 0, proc.log_tail()


def _stored(es: Elasticsearch, ids: list[str], timeout_s: float = 30.0) -> dict[str, int]:
    """event id -> number of stored copies, once all are visible (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        es.indices.refresh(index="audit-*", ignore_unavailable=True, allow_no_indices=True)
        counts = {}
        for i in range(0, len(ids), 1000):
            hits = es.search(
                index="audit-events-*",
                size=10_000,
                query={"terms": {"event.id": ids[i : i + 1000]}},
                source=["event.id"],
            )["hits"]["hits"]
            for hit in hits:
                eid = hit["_source"]["event"]["id"]
                counts[eid] = counts.get(eid, 0) + 1
        if len(counts) >= len(ids):
            break
        time.sleep(0.5)
    return counts


def _post_json(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_sdk_exporters_grpc_and_http_are_stored_with_their_trace(
    serve: Serve, es: Elasticsearch
) -> None:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HttpLogExporter,
    )
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from otel_audit import AuditLogger

    tracer = TracerProvider().get_tracer("test")
    sent: dict[str, str] = {}
    for name, exporter in (
        ("grpc-svc", OTLPLogExporter(endpoint=f"127.0.0.1:{serve.grpc_port}", insecure=True)),
        ("http-svc", HttpLogExporter(endpoint=serve.http_url + "/v1/logs")),
    ):
        provider = LoggerProvider(resource=Resource.create({"service.name": name}))
        provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
        audit = AuditLogger(provider)
        for n in range(5):
            with tracer.start_as_current_span(f"op-{n}") as span:
                event_id = audit.emit(
                    action="invoice.update",
                    category="data_change",
                    outcome="success",
                    actor_id=f"u-{n}",
                    actor_type="user",
                    resource_type="invoice",
                    resource_id=f"inv-{n}",
                )
                sent[event_id] = format(span.get_span_context().trace_id, "032x")
        provider.force_flush()
        provider.shutdown()

    counts = _stored(es, list(sent))
    assert counts == dict.fromkeys(sent, 1)
    hits = es.search(index="audit-events-*", size=20, query={"match_all": {}})["hits"]["hits"]
    by_id = {h["_source"]["event"]["id"]: h["_source"] for h in hits}
    for event_id, trace_id in sent.items():
        assert by_id[event_id]["trace"]["id"] == trace_id
    assert {d["service"]["name"] for d in by_id.values()} == {"grpc-svc", "http-svc"}


def test_otlp_json_follows_the_otlp_spec_and_mixed_batches_are_exact(
    serve: Serve, es: Elasticsearch
) -> None:
    good_id, other_id, bad_id = (new_event_id() for _ in range(3))
    trace_hex = "4BF92F3577B34DA6A3CE929D0E0E4736"  # upper case: ids are case-insensitive hex
    now = time.time_ns()

    def attrs(event_id: str, **extra: Any) -> list[dict[str, Any]]:
        values = audit_attributes(0, audit__event__id=event_id, **extra)
        return [{"key": k, "value": {"stringValue": v}} for k, v in values.items()]

    body = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}],
                    "someFutureField": {"ignored": True},
                },
                "scopeLogs": [
                    {
                        "scope": {"name": "hand-built", "unknownScopeField": 1},
                        "logRecords": [
                            {
                                "timeUnixNano": str(now),  # 64-bit ints as strings ...
                                "severityNumber": 9,  # ... enums as integers
                                "traceId": trace_hex,
                                "spanId": "00F067AA0BA902B7",
                                "body": {"stringValue": "updated"},
                                "attributes": [
                                    *attrs(good_id),
                                    {"key": "retries", "value": {"intValue": "3"}},
                                ],
                                "notInTheSpec": "ignored",
                            },
                            {
                                "timeUnixNano": now,  # ... or numbers
                                "severityNumber": 9,
                                "traceId": trace_hex.lower(),
                                "attributes": attrs(other_id),
                            },
                            {
                                "timeUnixNano": now,
                                "attributes": attrs(bad_id, audit__outcome="ok"),
                            },
                        ],
                    }
                ],
            }
        ]
    }
    url = serve.http_url + "/v1/logs"
    status, answer = _post_json(url, body)
    assert status == 200
    partial = answer["partialSuccess"]
    assert int(partial["rejectedLogRecords"]) == 1
    assert (
        "audit.outcome: 'ok' is not one of success, failure, denied, unknown"
        in (partial["errorMessage"])
    )

    # The same request again: a retry, stored once, and the same single rejection.
    status, again = _post_json(url, body)
    assert status == 200 and int(again["partialSuccess"]["rejectedLogRecords"]) == 1
    assert _stored(es, [good_id, other_id]) == {good_id: 1, other_id: 1}

    hits = es.search(index="audit-events-*", query={"term": {"event.id": good_id}})["hits"]
    doc = hits["hits"][0]["_source"]
    assert doc["trace"]["id"] == trace_hex.lower()
    assert doc["span"]["id"] == "00f067aa0ba902b7"
    assert doc["audit"]["extra"]["retries"] == 3
    assert doc["audit"]["scope"]["name"] == "hand-built"

    es.indices.refresh(index="audit-rejected-*")
    rejected = es.search(index="audit-rejected-*", query={"term": {"event.id": bad_id}})
    assert rejected["hits"]["total"]["value"] >= 1
    reasons = rejected["hits"]["hits"][0]["_source"]["reasons"]
    assert any(r.get("field") == "audit.outcome" for r in reasons), reasons


def test_sigkill_mid_stream_loses_no_acknowledged_event(serve: Serve, es: Elasticsearch) -> None:
    acked: list[str] = []

    def send_batches(count: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{serve.grpc_port}") as channel:
            stub = LogsServiceStub(channel)
            for _ in range(count):
                records = [audit_attributes(i) for i in range(50)]
                request: ExportLogsServiceRequest = logs_request(records)
                try:
                    stub.Export(request, timeout=10)
                except grpc.RpcError:
                    return  # not acknowledged: the client would retry it
                acked.extend(r["audit.event.id"] for r in records)

    # Requests in flight while the process dies: only acknowledged ones must survive.
    sender = threading.Thread(target=send_batches, args=(400,), daemon=True)
    sender.start()
    deadline = time.monotonic() + 60
    while len(acked) < 500 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert serve.stop(signal.SIGKILL) == -signal.SIGKILL
    sender.join(30)
    assert len(acked) >= 500
    serve.start()  # same ports, same spool
    send_batches(5)
    counts = _stored(es, acked, timeout_s=60)
    assert len(counts) == len(acked), f"missing {len(acked) - len(counts)} acknowledged events"
    assert set(counts.values()) == {1}
