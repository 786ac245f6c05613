"""Stored documents against the ECS field definitions the project pins.

The definitions are ECS 9.4.0's ``ecs_flat`` as Elastic publishes them in the npm package
``@elastic/ecs`` 9.4.0 (generated from the elastic/ecs repository's tag v9.4.0; pinned with
its integrity hash in ``sdk/node/package-lock.json`` and installed by ``make sdk``). Every
field of a stored document that ECS defines must have a mapping of ECS's type (``date``
also accepts ``date_nanos``, ``match_only_text`` the ``text`` this distribution has), hold
values of that type, only the allowed values ECS lists, and only the ``event.type`` values
ECS expects for the document's ``event.category``. ``ecs.version`` is the pinned version.

The documents are real ones: every category, outcome and actor type, through the Python
builder into the real Elasticsearch with the project's template, read back as stored.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from indexer.templates import install_templates
from otel_audit.document import build_document
from otel_audit.emit import new_event_id
from otel_audit.record import LogRecordData
from otel_audit.schema import load_schema
from otel_audit.validate import validate
from tests.support.sdk_examples import ensure_node_dependencies

SCHEMA = load_schema()
NODE_PACKAGE = Path(__file__).resolve().parents[2] / "sdk" / "node"
ECS_VERSION = "9.4.0"
COMPATIBLE = {"date": {"date", "date_nanos"}, "match_only_text": {"text", "match_only_text"}}


@cache
def ecs_fields() -> dict[str, Any]:
    """The pinned ECS flat definitions (type, normalize, allowed values) by field name."""
    script = (
        "const flat = require('@elastic/ecs/generated/ecs_flat.js').EcsFlat;"
        "const {EcsVersion} = require('@elastic/ecs');"
        "const out = {};"
        "for (const [k, f] of Object.entries(flat)) out[k] = {type: f.type,"
        " normalize: f.normalize || [], allowed: (f.allowed_values || []).map(v => "
        "({name: v.name, expected: v.expected_event_types || null}))};"
        "process.stdout.write(JSON.stringify({version: EcsVersion, fields: out}));"
    )
    ensure_node_dependencies()  # a clone where `make sdk` has not run yet
    done = subprocess.run(
        ["node", "-e", script], cwd=NODE_PACKAGE, capture_output=True, text=True, check=True
    )
    raw = json.loads(done.stdout)
    assert raw["version"] == ECS_VERSION, raw["version"]
    fields: dict[str, Any] = raw["fields"]
    return fields


def _records() -> list[LogRecordData]:
    now = time.time_ns()
    out = []
    actions = {
        "authentication": "user.login",
        "authorization": "invoice.approve",
        "permission_change": "role.grant",
        "data_access": "invoice.export",
        "data_change": "invoice.delete",
        "configuration": "flag.set",
        "integration": "webhook.deliver",
        "user_action": "report.view",
        "system": "job.start",
    }
    outcomes = SCHEMA.field("audit.outcome").enum
    actor_types = SCHEMA.field("audit.actor.type").enum
    for i, category in enumerate(SCHEMA.field("audit.category").enum):
        for j, outcome in enumerate(outcomes):
            attrs: dict[str, Any] = {
                "audit.action": actions[category],
                "audit.category": category,
                "audit.outcome": outcome,
                "audit.actor.id": f"a-{i}-{j}",
                "audit.actor.type": actor_types[(i + j) % len(actor_types)],
                "audit.actor.name": "Actor",
                "audit.actor.roles": ["billing.admin"],
                "audit.resource.type": "invoice",
                "audit.resource.id": "inv-1",
                "audit.event.id": new_event_id(),
                "audit.reason": "policy",
                "audit.tenant.id": "acme",
                "audit.target.user.id": "u-2",
                "audit.target.user.name": "Grace",
                "client.address": "203.0.113.7",
                "user_agent.original": "curl/8",
                "error.type": "Denied",
            }
            out.append(
                LogRecordData(
                    attributes=attrs,
                    resource={"service.name": "billing", "host.name": "h1"},
                    time_unix_nano=now - 1000,
                    observed_time_unix_nano=now,
                    severity_number=9,
                    severity_text="INFO",
                    body="audit",
                    trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
                    span_id="00f067aa0ba902b7",
                    event_name=actions[category],
                )
            )
    return out


def _leaves(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = prefix + key
        if isinstance(value, dict) and path not in ecs_fields():
            out |= _leaves(value, path + ".")
        else:
            out[path] = value
    return out


def _mapping_leaves(props: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in props.items():
        if "properties" in value:
            out |= _mapping_leaves(value["properties"], f"{prefix}{key}.")
        else:
            out[prefix + key] = value["type"]
    return out


def _value_fits(kind: str, value: Any) -> bool:
    if kind in ("keyword", "match_only_text", "text", "wildcard", "constant_keyword"):
        return isinstance(value, str)
    if kind == "date":
        return isinstance(value, str) and value[:4].isdigit() and value.endswith("Z")
    if kind == "ip":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return False
        return True
    if kind == "long":
        return isinstance(value, int) and not isinstance(value, bool)
    return False


def conformance_problems(doc: dict[str, Any], mapping: dict[str, str]) -> list[str]:
    """What in ``doc`` (and the index mapping) breaks the pinned ECS definitions."""
    fields = ecs_fields()
    problems = []
    leaves = _leaves(doc)
    for path, value in leaves.items():
        spec = fields.get(path)
        if spec is None:
            continue
        kind = spec["type"]
        mapped = mapping.get(path)
        if mapped not in COMPATIBLE.get(kind, {kind}):
            problems.append(f"{path}: mapped as {mapped}, ECS says {kind}")
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and "array" not in spec["normalize"]:
            problems.append(f"{path}: an array, ECS expects one value")
        for v in values:
            if not _value_fits(kind, v):
                problems.append(f"{path}: {v!r} is not a {kind}")
        allowed = {a["name"] for a in spec["allowed"]}
        if allowed:
            problems += [f"{path}: {v!r} is not an ECS value" for v in values if v not in allowed]
    expected: set[str] = set()
    for category in leaves.get("event.category", []):
        for allowed_value in fields["event.category"]["allowed"]:
            if allowed_value["name"] == category:
                expected |= set(allowed_value["expected"] or ())
    for t in leaves.get("event.type", []):
        if t not in expected:
            problems.append(f"event.type {t!r} is not expected for {leaves['event.category']}")
    if leaves.get("ecs.version") != ECS_VERSION:
        problems.append(f"ecs.version {leaves.get('ecs.version')!r} is not {ECS_VERSION}")
    return problems


def test_the_schema_names_the_pinned_ecs_version() -> None:
    assert SCHEMA.constant("ecs_version") == ECS_VERSION
    assert ecs_fields()["ecs.version"]["type"] == "keyword"


def test_every_event_type_the_schema_derives_is_one_ecs_expects() -> None:
    fields = ecs_fields()
    expected = {a["name"]: set(a["expected"] or ()) for a in fields["event.category"]["allowed"]}
    for category, ecs_categories in SCHEMA.ecs_category.items():
        allowed: set[str] = set().union(*(expected[c] for c in ecs_categories))
        assert SCHEMA.ecs_type.all_types(category) <= allowed, category


@pytest.mark.integration
def test_stored_documents_pass_the_pinned_ecs_definitions(clean_es: Elasticsearch) -> None:
    es = clean_es
    install_templates(es)
    received = time.time_ns()
    records = _records()
    ids = []
    for record in records:
        assert validate(record) == []
        doc = build_document(record, received_ns=received)
        index = "audit-events-" + doc["@timestamp"][:10].replace("-", ".")
        es.index(index=index, id=doc["event"]["id"], document=doc, op_type="create")
        ids.append(doc["event"]["id"])
    es.indices.refresh(index="audit-events-*")
    hits = es.search(index="audit-events-*", query={"ids": {"values": ids}}, size=len(ids))
    stored = [h["_source"] for h in hits["hits"]["hits"]]
    assert len(stored) == len(records)
    mapping_resp = es.indices.get_mapping(index="audit-events-*")
    (mapping,) = {
        json.dumps(m["mappings"]["properties"], sort_keys=True) for m in mapping_resp.values()
    }
    mapping_types = _mapping_leaves(json.loads(mapping))
    problems = {p for doc in stored for p in conformance_problems(doc, mapping_types)}
    assert not problems, sorted(problems)
    # The check has teeth: a document off the definitions is caught.
    bad = dict(stored[0], event={**stored[0]["event"], "outcome": "denied", "type": ["deny"]})
    assert len(conformance_problems(bad, mapping_types)) == 3
