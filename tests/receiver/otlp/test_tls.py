"""TLS on the OTLP listeners: mTLS identities, refused certificates, reload without restart,
and the plaintext-on-the-network guard. Certificates are made in the test."""

from __future__ import annotations

import dataclasses
import socket
import ssl
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc

from indexer.tls import TlsConfig
from receiver.config import ConfigError, load_config
from receiver.identity import WriterIdentity, WritersConfig
from tests.receiver.tls_certs import Issued, TestCa
from tests.support.front_harness import (
    CapturingConsumer,
    LiveReceiver,
    front_config,
    logs_request,
    running_receiver,
)


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    return TestCa(tmp_path)


@pytest.fixture
def server_cert(ca: TestCa) -> Issued:
    return ca.issue("server", "otel-audit receiver", server=True)


@pytest.fixture
def live(consumer: CapturingConsumer, ca: TestCa, server_cert: Issued) -> Iterator[LiveReceiver]:
    tls = TlsConfig(
        cert_file=str(server_cert.cert_file),
        key_file=str(server_cert.key_file),
        client_ca_file=str(ca.cert_file),
        client_auth="require",
        reload_interval_s=0.2,
    )
    tls.validate()
    writers = WritersConfig(
        required=True,
        identities=(
            WriterIdentity(
                name="billing-collector",
                cert_names=("CN=billing-collector",),
                services=("billing",),
                tenants=("*",),
            ),
        ),
    )
    base = front_config()
    sections = dict(base.sections, tls=tls, writers=writers)
    config = dataclasses.replace(base, sections=types.MappingProxyType(sections))
    with running_receiver(consumer, config) as live:
        yield live


def _grpc_export(live: LiveReceiver, ca: TestCa, client: Issued | None) -> Any:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem,
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None,
    )
    target = f"localhost:{live.server.grpc_port}"
    with grpc.secure_channel(target, credentials) as channel:
        stub = logs_service_pb2_grpc.LogsServiceStub(channel)  # type: ignore[no-untyped-call]
        return stub.Export(logs_request(2), timeout=10)


def _https(live: LiveReceiver) -> str:
    return f"https://localhost:{live.server.http_port}/v1/logs"


def _http_export(live: LiveReceiver, ca: TestCa, client: Issued | None) -> requests.Response:
    return requests.post(
        _https(live),
        data=logs_request(2).SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        verify=str(ca.cert_file),
        cert=(str(client.cert_file), str(client.key_file)) if client else None,
        timeout=10,
    )


def test_mtls_certificate_identifies_the_writer(
    live: LiveReceiver, consumer: CapturingConsumer, ca: TestCa
) -> None:
    client = ca.issue("billing", "billing-collector")
    response = _grpc_export(live, ca, client)
    assert not response.HasField("partial_success")
    assert _http_export(live, ca, client).status_code == 200
    assert len(consumer.records) == 4


def test_certificate_of_an_unknown_writer_is_unauthenticated(
    live: LiveReceiver, consumer: CapturingConsumer, ca: TestCa
) -> None:
    stranger = ca.issue("stranger", "someone-else")
    with pytest.raises(grpc.RpcError) as info:
        _grpc_export(live, ca, stranger)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert _http_export(live, ca, stranger).status_code == 401
    assert consumer.records == []


def test_no_client_certificate_fails_the_handshake(
    live: LiveReceiver, consumer: CapturingConsumer, ca: TestCa
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _grpc_export(live, ca, None)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    with pytest.raises(requests.exceptions.RequestException):
        _http_export(live, ca, None)
    assert consumer.records == []


def test_wrong_ca_and_expired_certificates_are_refused(
    live: LiveReceiver, consumer: CapturingConsumer, ca: TestCa, tmp_path: Path
) -> None:
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    rogue = TestCa(other_dir, "rogue CA").issue("rogue", "billing-collector")
    expired = ca.issue("expired", "billing-collector", expired=True)
    for client in (rogue, expired):
        with pytest.raises(grpc.RpcError) as info:
            _grpc_export(live, ca, client)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        with pytest.raises(requests.exceptions.RequestException):
            _http_export(live, ca, client)
    assert consumer.records == []


def _served_certificate(port: int, ca: TestCa, client: Issued) -> bytes:
    ctx = ssl.create_default_context(cafile=str(ca.cert_file))
    ctx.load_cert_chain(str(client.cert_file), str(client.key_file))
    with (
        socket.create_connection(("localhost", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_certificates_reload_without_restart(
    live: LiveReceiver, consumer: CapturingConsumer, ca: TestCa, server_cert: Issued
) -> None:
    from cryptography import x509

    client = ca.issue("billing", "billing-collector")
    before = x509.load_der_x509_certificate(_served_certificate(live.server.http_port, ca, client))
    assert before.subject.rfc4514_string() == "CN=otel-audit receiver"
    time.sleep(0.05)  # a different mtime
    ca.issue("server", "otel-audit receiver rotated", server=True)  # overwrites the files
    deadline = time.monotonic() + 10
    after = before
    while time.monotonic() < deadline:
        after = x509.load_der_x509_certificate(
            _served_certificate(live.server.http_port, ca, client)
        )
        if after != before:
            break
        time.sleep(0.1)
    assert after.subject.rfc4514_string() == "CN=otel-audit receiver rotated"
    # gRPC picks the new chain up on its next handshake too, and still serves.
    response = _grpc_export(live, ca, client)
    assert not response.HasField("partial_success")
    assert live.server.tls is not None and live.server.tls.generation >= 1


def test_plaintext_on_a_network_address_needs_insecure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "receiver.yaml"
    path.write_text("grpc_endpoint: 0.0.0.0:4317\n")
    with pytest.raises(ConfigError, match=r"grpc_endpoint: 0\.0\.0\.0 .*tls\.insecure: true"):
        load_config(path, env={})
    path.write_text("grpc_endpoint: 0.0.0.0:4317\ntls:\n  insecure: true\n")
    with caplog.at_level("WARNING", logger="otel_audit.tls"):
        load_config(path, env={})
    assert "plaintext listener on a non-loopback address" in caplog.text
    path.write_text("grpc_endpoint: 127.0.0.1:4317\n")
    load_config(path, env={})


def test_query_api_serves_https_with_the_same_certificate(ca: TestCa, server_cert: Issued) -> None:
    import asyncio

    from indexer.query.api import start_query_api
    from indexer.tls import ServerTls
    from tests.support.collector_build import free_port

    tls = ServerTls(
        TlsConfig(
            cert_file=str(server_cert.cert_file),
            key_file=str(server_cert.key_file),
            client_ca_file=str(ca.cert_file),
            client_auth="require",
        )
    )
    port = free_port()
    config = front_config(query_api_endpoint=f"127.0.0.1:{port}", es_url="http://127.0.0.1:9")
    client = ca.issue("reader", "auditor")

    async def scenario() -> tuple[int, bool, bool]:
        runner = await start_query_api(config, None, ssl_context=tls.ssl_context)
        try:

            def probe() -> tuple[int, bool, bool]:
                url = f"https://localhost:{port}/healthz"
                status = requests.get(
                    url,
                    verify=str(ca.cert_file),
                    cert=(str(client.cert_file), str(client.key_file)),
                    timeout=10,
                ).status_code
                try:
                    requests.get(url, verify=str(ca.cert_file), timeout=10)
                    no_cert_refused = False
                except requests.exceptions.RequestException:
                    no_cert_refused = True
                try:
                    requests.get(f"http://localhost:{port}/healthz", timeout=10)
                    plain_refused = False
                except requests.exceptions.RequestException:
                    plain_refused = True
                return status, no_cert_refused, plain_refused

            return await asyncio.to_thread(probe)
        finally:
            await runner.cleanup()

    status, no_cert_refused, plain_refused = asyncio.run(scenario())
    assert status == 503  # served over HTTPS; Elasticsearch is deliberately unreachable
    assert no_cert_refused and plain_refused
