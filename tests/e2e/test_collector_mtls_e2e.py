"""The real Collector (``otelcol-audit``, its ``bearertokenauth`` and TLS settings) sends to
``otel-audit serve`` over mTLS with a token; the receiver stores the writer in every event
and dead-letters a record for a service the writer may not send.

Services export with the real OTel SDK to the Collector over TLS with their own token;
certificates are made here with ``cryptography``."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from elasticsearch import Elasticsearch

from indexer.indices import EVENTS_ALIAS, REJECTED_ALIAS
from otel_audit import _logs_compat
from otel_audit.emit import AuditLogger
from receiver.identity import hash_token
from tests.e2e.conftest import ReceiverProcess
from tests.receiver.tls_certs import TestCa
from tests.support.collector_build import CONFIG_DIR

pytestmark = [pytest.mark.collector, pytest.mark.integration]

TLS_CONFIG = CONFIG_DIR / "testdata" / "otelcol-audit-tls.yaml"
SERVICE_TOKEN = "service-token-for-the-collector-0001"
COLLECTOR_TOKEN = "collector-token-for-the-receiver-0001"


def _emit(collector_endpoint: str, ca_file: Path, service: str, n: int) -> None:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    provider = _logs_compat.sdk_logger_provider({"service.name": service})
    exporter = OTLPLogExporter(
        endpoint=collector_endpoint,
        credentials=grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes()),
        headers=(("authorization", f"Bearer {SERVICE_TOKEN}"),),
    )
    provider.add_log_record_processor(
        _logs_compat.batch_processor(exporter, schedule_delay_millis=50)
    )
    audit = AuditLogger(provider)
    for i in range(n):
        audit.emit(
            action="order.create",
            category="data_change",
            outcome="success",
            actor_id="u-1",
            actor_type="user",
            resource_type="order",
            resource_id=f"{service}-{i}",
        )
    provider.force_flush()
    provider.shutdown()


def _wait_for(check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.5)


def _hits(es: Elasticsearch, index: str, service: str, expected: int) -> list[dict[str, Any]]:
    es.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
    hits = es.search(
        index=index,
        query={"term": {"service.name": service}},
        size=100,
        ignore_unavailable=True,
    )["hits"]["hits"]
    return [h["_source"] for h in hits] if len(hits) >= expected else []


def test_collector_sends_over_mtls_with_a_token_and_the_writer_is_stored(
    clean_es: Elasticsearch,
    es_url: str,
    tmp_path: Path,
    start_collector: Callable[..., Any],
) -> None:
    run = secrets.token_hex(4)  # the node may be shared: this run's services only
    checkout, payments = f"checkout-{run}", f"payments-{run}"
    ca = TestCa(tmp_path)
    server = ca.issue("receiver", "otel-audit receiver", server=True)
    collector_tls = ca.issue("collector-server", "otelcol-audit", server=True)
    client = ca.issue("collector-client", "edge-collector")
    reader = ca.issue("reader", "auditor")
    (tmp_path / "service-tokens").write_text(SERVICE_TOKEN + "\n")
    (tmp_path / "receiver-token").write_text(COLLECTOR_TOKEN + "\n")

    receiver = ReceiverProcess(
        work_dir=tmp_path / "receiver",
        es_url=es_url,
        extra_config={
            "tls": {
                "cert_file": str(server.cert_file),
                "key_file": str(server.key_file),
                "client_ca_file": str(ca.cert_file),
                "client_auth": "require",
            },
            "writers": {
                "required": True,
                "identities": [
                    {
                        "name": "edge-collector",
                        "token_sha256": [hash_token(COLLECTOR_TOKEN)],
                        "services": [checkout],
                        "tenants": ["*"],
                    }
                ],
            },
        },
    )
    receiver.start()
    try:
        collector = start_collector(
            f"localhost:{receiver.grpc_port}",
            configs=[TLS_CONFIG],
            env={
                "OTEL_AUDIT_COLLECTOR_TLS_CERT": str(collector_tls.cert_file),
                "OTEL_AUDIT_COLLECTOR_TLS_KEY": str(collector_tls.key_file),
                "OTEL_AUDIT_COLLECTOR_TOKENS_FILE": str(tmp_path / "service-tokens"),
                "OTEL_AUDIT_RECEIVER_CA": str(ca.cert_file),
                "OTEL_AUDIT_RECEIVER_CLIENT_CERT": str(client.cert_file),
                "OTEL_AUDIT_RECEIVER_CLIENT_KEY": str(client.key_file),
                "OTEL_AUDIT_RECEIVER_TOKEN_FILE": str(tmp_path / "receiver-token"),
                "OTEL_AUDIT_BACKEND_ENDPOINT": "http://127.0.0.1:9",
            },
        )
        target = f"localhost:{collector.ports.grpc}"
        _emit(target, ca.cert_file, checkout, 3)
        _emit(target, ca.cert_file, payments, 1)  # not this writer's service

        events = _wait_for(lambda: _hits(clean_es, EVENTS_ALIAS, checkout, 3))
        assert len(events) == 3
        for doc in events:
            assert doc["writer"] == {"auth": "token", "id": "edge-collector"}
        assert _hits(clean_es, EVENTS_ALIAS, payments, 0) == []
        letters = _wait_for(lambda: _hits(clean_es, REJECTED_ALIAS, payments, 1))
        (letter,) = letters
        assert letter["reasons"][0]["rule"] == "writer_not_allowed"

        # The query API (HTTPS, client certificate) shows the stored writer.
        answer = requests.get(
            f"https://localhost:{receiver.query_port}/api/v1/events?service={checkout}",
            headers={"Authorization": f"Bearer {receiver.reader_token}"},
            verify=str(ca.cert_file),
            cert=(str(reader.cert_file), str(reader.key_file)),
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        shown = answer.json()
        items = shown["events"]
        assert len(items) == 3
        assert all(e["writer"]["id"] == "edge-collector" for e in items)
    finally:
        receiver.stop()
