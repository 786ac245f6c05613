"""Writer identity: attacks first (no token, wrong token, another service, a forged writer),
then what the authenticated writer may do. Real gRPC and HTTP clients against the server."""

from __future__ import annotations

import dataclasses
import time
import types
from collections.abc import Iterator
from typing import Any

import grpc
import orjson
import pytest
import requests
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc

from otel_audit.schema import load_schema
from receiver.config import ReceiverConfig, load_config
from receiver.identity import (
    CURRENT_WRITER,
    WRITER_FIELD,
    Writer,
    WriterIdentity,
    WriterRegistry,
    WritersConfig,
    hash_token,
    stamp_writer,
)
from tests.support.front_harness import (
    CapturingConsumer,
    LiveReceiver,
    audit_attributes,
    front_config,
    logs_request,
    running_receiver,
)

TOKEN_BILLING = "billing-token-0123456789"
TOKEN_AUTH = "auth-token-9876543210"


def with_sections(config: ReceiverConfig, **sections: Any) -> ReceiverConfig:
    merged = dict(config.sections)
    merged.update(sections)
    return dataclasses.replace(config, sections=types.MappingProxyType(merged))


def writers(**values: Any) -> WritersConfig:
    values.setdefault("required", True)
    values.setdefault(
        "identities",
        (
            WriterIdentity(
                name="billing-collector",
                token_sha256=(hash_token(TOKEN_BILLING),),
                services=("billing",),
                tenants=("*",),
            ),
            WriterIdentity(
                name="auth-collector",
                token_sha256=(hash_token(TOKEN_AUTH),),
                services=("auth",),
                tenants=("acme",),
                rate_records_per_s=5,
                burst_records=10,
            ),
        ),
    )
    config = WritersConfig(**values)
    config.validate()
    return config


@pytest.fixture
def live(consumer: CapturingConsumer) -> Iterator[LiveReceiver]:
    config = with_sections(front_config(), writers=writers())
    with running_receiver(consumer, config) as live:
        yield live


def _request(service: str, n: int = 1, **attrs: Any) -> Any:
    request = logs_request([audit_attributes(i, **attrs) for i in range(n)])
    for kv in request.resource_logs[0].resource.attributes:
        if kv.key == "service.name":
            kv.value.string_value = service
    return request


def _grpc_export(live: LiveReceiver, request: Any, token: str | None) -> Any:
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    with grpc.insecure_channel(live.grpc_target) as channel:
        stub = logs_service_pb2_grpc.LogsServiceStub(channel)  # type: ignore[no-untyped-call]
        return stub.Export(request, timeout=10, metadata=metadata)


def _http_export(live: LiveReceiver, request: Any, token: str | None) -> requests.Response:
    headers = {"Content-Type": "application/x-protobuf"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(
        f"{live.http_url}/v1/logs", data=request.SerializeToString(), headers=headers, timeout=10
    )


# -- attacks ---------------------------------------------------------------------------------


def test_no_credential_is_unauthenticated(live: LiveReceiver, consumer: CapturingConsumer) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _grpc_export(live, _request("billing"), None)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "credential is required" in (info.value.details() or "")
    answer = _http_export(live, _request("billing"), None)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert consumer.records == []


@pytest.mark.parametrize("token", ["not-a-real-token", TOKEN_BILLING + "x", ""])
def test_wrong_token_is_unauthenticated(
    live: LiveReceiver, consumer: CapturingConsumer, token: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _grpc_export(live, _request("billing"), token)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert _http_export(live, _request("billing"), token).status_code == 401
    assert consumer.records == []


def test_claiming_another_service_is_rejected_per_record(
    live: LiveReceiver, consumer: CapturingConsumer
) -> None:
    request = _request("billing", 2)
    forged = _request("auth", 1).resource_logs[0]
    request.resource_logs.append(forged)
    response = _grpc_export(live, request, TOKEN_BILLING)
    assert response.partial_success.rejected_log_records == 1
    message = response.partial_success.error_message
    assert "writer 'billing-collector' may not send service.name 'auth'" in message
    assert [r.resource["service.name"] for r in consumer.records] == ["billing", "billing"]
    assert len(consumer.rejected) == 1
    assert consumer.rejected[0].resource["service.name"] == "auth"
    (violation,) = consumer.reasons
    assert getattr(violation, "rule", None) == "writer_not_allowed"
    answer = _http_export(live, _request("auth"), TOKEN_BILLING)
    assert answer.status_code == 200
    assert b"may not send service.name" in answer.content


def test_tenant_outside_the_allowance_is_rejected(
    live: LiveReceiver, consumer: CapturingConsumer
) -> None:
    ok = _grpc_export(live, _request("auth", 1, audit__tenant__id="acme"), TOKEN_AUTH)
    assert not ok.HasField("partial_success")
    other = _grpc_export(live, _request("auth", 1, audit__tenant__id="globex"), TOKEN_AUTH)
    assert other.partial_success.rejected_log_records == 1
    assert "may not send audit.tenant.id 'globex'" in other.partial_success.error_message
    untenanted = _grpc_export(live, _request("auth", 1), TOKEN_AUTH)
    assert "must send audit.tenant.id" in untenanted.partial_success.error_message
    assert len(consumer.records) == 1


def test_rate_limit_is_resource_exhausted_with_retry_info(
    live: LiveReceiver, consumer: CapturingConsumer
) -> None:
    request = _request("auth", 8, audit__tenant__id="acme")
    _grpc_export(live, request, TOKEN_AUTH)  # 8 of the bucket's 10
    with pytest.raises(grpc.RpcError) as info:
        _grpc_export(live, request, TOKEN_AUTH)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate limit" in (info.value.details() or "")
    assert any(k == "grpc-status-details-bin" for k, _ in info.value.trailing_metadata())
    answer = _http_export(live, request, TOKEN_AUTH)
    assert answer.status_code == 429
    assert int(answer.headers["Retry-After"]) >= 1
    assert len(consumer.records) == 8


# -- what is stored ----------------------------------------------------------------------------


def test_writer_field_sorts_after_every_schema_field() -> None:
    from indexer.templates import event_properties

    top = set(event_properties(load_schema())) - {WRITER_FIELD}
    assert top and max(top) < WRITER_FIELD


def test_stamp_matches_the_python_path_byte_for_byte() -> None:
    """The native decoder's prepared write plus stamp_writer equals the Python path's
    document with the writer, bytes and leaf."""
    from receiver import native
    from receiver.ingest.prepare import native_plan, prepare_in_python
    from receiver.otlp.decode import decode_logs_protobuf

    if native.module() is None:
        pytest.fail(f"the native extension is not installed: {native.DESCRIPTION}")
    schema = load_schema()
    plan = native_plan(schema, leaf=True)
    body = _request("billing", 3, writer__id="forged").SerializeToString()
    received_ns = time.time_ns()
    records = decode_logs_protobuf(body, plan, received_ns).records
    writer = Writer("billing-collector", "token")
    assert writer.stamp is not None
    for record in records:
        assert record.prepared is not None
        stamped = stamp_writer(record.prepared, writer.stamp)
        full = record.full() if hasattr(record, "full") else record
        token = CURRENT_WRITER.set(writer)
        try:
            python = prepare_in_python(full, received_ns=received_ns, schema=schema, leaf=True)
        finally:
            CURRENT_WRITER.reset(token)
        assert stamped == python
        doc = orjson.loads(stamped[2][stamped[3] :])
        assert doc["writer"] == {"auth": "token", "id": "billing-collector"}
        # The record's own attempt stays an attribute, below audit.*
        assert doc["audit"]["extra"]["writer.id"] == "forged"


def test_registry_refuses_bad_scheme_and_unknown_certificate() -> None:
    registry = WriterRegistry(writers())
    from receiver.identity import Unauthenticated

    with pytest.raises(Unauthenticated, match="Bearer"):
        registry.authenticate("Basic dXNlcjpwYXNz")
    with pytest.raises(Unauthenticated, match="certificate names no known writer"):
        registry.authenticate(None, ["CN=intruder"])
    assert registry.authenticate(f"bearer {TOKEN_AUTH}").name == "auth-collector"


def test_config_rejects_clear_tokens_and_missing_allowance(tmp_path: Any) -> None:
    path = tmp_path / "receiver.yaml"
    path.write_text(
        "writers:\n  required: true\n  identities:\n"
        "    - name: billing\n      token_sha256: [plain-token]\n      services: [billing]\n"
    )
    with pytest.raises(ValueError, match=r"writers\.identities\[0\]\.token_sha256"):
        load_config(path, env={})
    path.write_text(
        f"writers:\n  identities:\n    - name: billing\n      token_sha256: [{hash_token('t')}]\n"
    )
    with pytest.raises(ValueError, match=r"identities\[0\]\.services"):
        load_config(path, env={})


@pytest.mark.parametrize(
    ("environment", "service", "actor_name"),
    [
        ("prod", "auth", "billing"),  # the actor's name is an allowed service
        ('p}r"od', "auth", "x"),  # braces and quotes before service.name
        ("prod", 'au"th}', "billing"),
        ("prod", "billing", '"service":{"name":"billing"}'),
    ],
)
def test_stored_fields_read_back_what_the_document_holds(
    environment: str, service: str, actor_name: str
) -> None:
    """The byte-level reading of a prepared document agrees with parsing it, whatever the
    client put in the other fields (they cannot pass for service.name or the tenant)."""
    from receiver import native
    from receiver.identity import StoredFields
    from receiver.ingest.prepare import native_plan
    from receiver.otlp.decode import decode_logs_protobuf

    if native.module() is None:
        pytest.fail(f"the native extension is not installed: {native.DESCRIPTION}")
    request = _request(service, 2, audit__actor__name=actor_name, audit__tenant__id="acme")
    request.resource_logs[0].resource.attributes.add(key="deployment.environment.name")
    request.resource_logs[0].resource.attributes[-1].value.string_value = environment
    records = decode_logs_protobuf(
        request.SerializeToString(), native_plan(load_schema(), leaf=False), time.time_ns()
    ).records
    fields = StoredFields((("service", "name"), ("organization", "id")))
    prepared = [r.prepared for r in records if r.prepared is not None]
    assert prepared, "the native decoder prepared none of the records"
    for p in prepared * 2:  # the second pass answers from the cache
        assert fields.read(p) == fields._parse(p) == (service, "acme")


@pytest.mark.parametrize(
    ("services", "tenants"),
    [
        (("billing",), ("acme",)),
        (("billing", "auth"), ("",)),
        (("*",), ("acme", "")),
        (("auth",), ("*",)),
    ],
)
def test_the_writers_own_plan_prepares_exactly_what_it_may_store(
    services: tuple[str, ...], tenants: tuple[str, ...]
) -> None:
    """Decoded with the writer's plan, a record within the writer's allowance is prepared
    with the writer in it, byte for byte as the Python path stores it; a record outside it
    is left to Python, which refuses it with its reason."""
    import asyncio

    from receiver import native
    from receiver.ingest.prepare import native_plan, prepare_in_python
    from receiver.otlp.decode import decode_logs_protobuf
    from receiver.otlp.export import ExportHandler
    from receiver.otlp.inflight import ByteBudget

    if native.module() is None:
        pytest.fail(f"the native extension is not installed: {native.DESCRIPTION}")
    schema = load_schema()
    stored: list[Any] = []
    base_plan = native_plan(schema, leaf=True)

    class Consumer:
        native_plan = base_plan

        async def consume_logs(self, records: list[Any]) -> Any:
            from receiver.pipeline import IngestResult

            stored.extend(records)
            return IngestResult(accepted=len(records), rejected=0)

        async def reject_records(self, records: list[Any], reasons: list[Any]) -> None:
            pass

    handler = ExportHandler(Consumer(), None, ByteBudget(1 << 30))
    request = _request("billing", 2, audit__tenant__id="acme")
    for service, tenant in (("billing", None), ("auth", "acme"), ("auth", None), ("x", "y")):
        extra = {"audit__tenant__id": tenant} if tenant else {}
        request.resource_logs.extend(_request(service, 2, **extra).resource_logs)
    request.resource_logs.extend(_request("billing", 1, audit__tenant__id="other").resource_logs)
    body = request.SerializeToString()
    writer = Writer("w-1", "mtls", services, tenants)
    received_ns = time.time_ns()
    plan = handler._writer_plan(writer)
    assert plan is not base_plan and handler._writer_plan(writer) is plan
    records = decode_logs_protobuf(body, plan, received_ns).records
    assert len(records) == 11
    allowed = 0
    for record in records:
        full = record.full() if hasattr(record, "full") else record
        why = writer.refusal(
            full.resource.get("service.name"), full.attributes.get("audit.tenant.id")
        )
        if why is not None:
            assert record.prepared is None, why
            continue
        allowed += 1
        assert record.prepared is not None
        token = CURRENT_WRITER.set(writer)
        try:
            python = prepare_in_python(full, received_ns=received_ns, schema=schema, leaf=True)
        finally:
            CURRENT_WRITER.reset(token)
        assert record.prepared == python
    assert 0 < allowed < 11
    decoded = handler.decode_logs(body, writer=writer)
    assert decoded.writer_plan is writer
    rejected, message = asyncio.run(handler.export_logs(decoded, writer))
    assert (len(stored), rejected) == (allowed, 11 - allowed), message
    assert all(
        orjson.loads(r.prepared[2][r.prepared[3] :])["writer"] == {"auth": "mtls", "id": "w-1"}
        for r in stored
    )
