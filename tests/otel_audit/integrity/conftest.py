"""Fixtures for the integrity tests: a typical stored event document and signing keys."""

from __future__ import annotations

from typing import Any

import pytest

from otel_audit.integrity import Ed25519PrivateKey, generate_private_key


def make_event_document(i: int = 0) -> dict[str, Any]:
    """An audit event document shaped like the stored ECS documents (~1.3 KB)."""
    return {
        "@timestamp": f"2025-11-27T10:15:{i % 60:02d}.123456789Z",
        "event": {
            "id": f"0193c0de-7f1a-7c3e-9a4b-{i:012d}",
            "action": "invoice.update",
            "category": ["configuration"],
            "outcome": "success",
            "kind": "event",
            "ingested": "2025-11-27T10:15:30.200Z",
        },
        "user": {"id": f"u-{i}", "name": "Zoë Example", "type": "user"},
        "audit": {
            "category": "data_change",
            "actor": {"id": f"u-{i}", "type": "user", "name": "Zoë Example"},
            "resource": {"type": "invoice", "id": f"inv-2025-{i:06d}"},
            "correlation_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "reason": "customer requested change of billing address",
            "tenant": {"id": "tenant-42"},
            "attributes": {"invoice.amount": 1234.5, "retry": 0, "approved": True},
        },
        "trace": {"id": "4bf92f3577b34da6a3ce929d0e0e4736"},
        "span": {"id": "00f067aa0ba902b7"},
        "service": {"name": "billing-api", "version": "2.3.1", "namespace": "payments"},
        "client": {"ip": "203.0.113.42", "untrusted": True},
        "user_agent": {"original": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36"},
        "session": {"id": "sess-9f8e7d6c5b4a"},
        "related": {"user": [f"u-{i}"], "ip": ["203.0.113.42"]},
        "otel": {"severity_number": 9, "dropped_attributes_count": None},
        "integrity": {"chain_id": "receiver-0", "block": 17, "leaf_index": i},
    }


@pytest.fixture
def event_document() -> dict[str, Any]:
    """One typical stored event document."""
    return make_event_document(7)


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    """The chain's signing key."""
    return generate_private_key()


@pytest.fixture(scope="session")
def other_key() -> Ed25519PrivateKey:
    """A key the verifier does not trust."""
    return generate_private_key()
