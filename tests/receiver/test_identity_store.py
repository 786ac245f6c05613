"""The authenticated writer in the store: the real ingest consumer and Elasticsearch.

Every stored event carries ``writer`` (set from the credential, whatever the record
says), its sealed leaf covers it, and a record outside the writer's allowance is in the
dead-letter index with the reason."""

from __future__ import annotations

import dataclasses
import secrets
import types
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from elasticsearch import Elasticsearch
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc

from indexer.indices import EVENTS_ALIAS, REJECTED_ALIAS
from otel_audit.integrity import leaf_hash_of_document
from receiver.identity import WriterIdentity, WritersConfig, hash_token
from receiver.sealing.state import Entries
from tests.receiver.conftest import ConsumerFactory
from tests.receiver.test_identity import TOKEN_BILLING
from tests.support.front_harness import (
    audit_attributes,
    front_config,
    logs_request,
    running_receiver,
)

pytestmark = pytest.mark.integration


def _docs(es: Elasticsearch, index: str, service: str) -> list[dict[str, Any]]:
    es.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
    query = {"term": {"service.name": service}}
    hits = es.search(index=index, query=query, size=100, ignore_unavailable=True)["hits"]["hits"]
    return [h["_source"] for h in hits]


def _service(request: Any, name: str) -> Any:
    for resource_logs in request.resource_logs:
        for kv in resource_logs.resource.attributes:
            if kv.key == "service.name":
                kv.value.string_value = name
    return request


def test_stored_events_carry_the_authenticated_writer(
    clean_es: Elasticsearch, make_consumer: ConsumerFactory
) -> None:
    leaves: dict[str, bytes] = {}

    class Sealer:
        async def on_durable(self, stored: Entries, created: Sequence[bool]) -> None:
            leaves.update(zip(stored.event_ids, stored.leaf_hashes, strict=True))

    consumer = make_consumer(sealer=Sealer())
    run = secrets.token_hex(4)  # the node may be shared: this run's services only
    billing, auth = f"billing-{run}", f"auth-{run}"
    writers = WritersConfig(
        required=True,
        identities=(
            WriterIdentity(
                name="billing-collector",
                token_sha256=(hash_token(TOKEN_BILLING),),
                services=(billing,),
                tenants=("*",),
            ),
        ),
    )
    base = front_config()
    config = dataclasses.replace(
        base, sections=types.MappingProxyType(dict(base.sections, writers=writers))
    )
    request = _service(
        logs_request(
            [
                audit_attributes(0),
                # Claims to be another writer (an attribute), and has a float: the Python path.
                audit_attributes(1, writer__id="admin", **{"writer.auth": "mtls", "amount": 1.5}),
            ]
        ),
        billing,
    )
    forged = _service(logs_request([audit_attributes(2)]), auth).resource_logs[0]
    request.resource_logs.append(forged)
    with running_receiver(consumer, config) as live, grpc.insecure_channel(live.grpc_target) as ch:
        stub = logs_service_pb2_grpc.LogsServiceStub(ch)  # type: ignore[no-untyped-call]
        response = stub.Export(
            request, timeout=30, metadata=(("authorization", f"Bearer {TOKEN_BILLING}"),)
        )
    assert response.partial_success.rejected_log_records == 1
    events = _docs(clean_es, EVENTS_ALIAS, billing)
    assert len(events) == 2
    assert _docs(clean_es, EVENTS_ALIAS, auth) == []
    for doc in events:
        assert doc["writer"] == {"auth": "token", "id": "billing-collector"}
        assert leaves[doc["event"]["id"]] == leaf_hash_of_document(doc)
    claimed = next(d for d in events if "writer.id" in d["audit"].get("extra", {}))
    assert claimed["audit"]["extra"]["writer.id"] == "admin"
    query = {
        "bool": {
            "filter": [
                {"term": {"writer.id": "billing-collector"}},
                {"term": {"service.name": billing}},
            ]
        }
    }
    assert clean_es.count(index=EVENTS_ALIAS, query=query)["count"] == 2
    (letter,) = _docs(clean_es, REJECTED_ALIAS, auth)
    assert letter["reasons"][0]["rule"] == "writer_not_allowed"
    assert f"may not send service.name '{auth}'" in letter["reasons"][0]["message"]
