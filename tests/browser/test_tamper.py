"""Attacks on what the console shows, made the way an Elasticsearch administrator without
the signing key can: edit an event, edit the block record to match, re-sign a block with
another key. Each must show as a failed proof in the browser, with the reason."""

from __future__ import annotations

from typing import Any

import pytest

from indexer.integrity.blocks import holding_query
from otel_audit.integrity import (
    Checkpoint,
    CompactRange,
    decode_hash,
    encode_hash,
    leaf_hash_of_document,
    make_checkpoint,
    sign_checkpoint,
)
from otel_audit.integrity.keys import generate_private_key
from tests.browser.conftest import Console, login, screenshot, wait_ready

pytestmark = pytest.mark.browser


_TOUCHED: set[str] = set()


def _untouched_event(console: Console) -> str:
    """An event whose block no earlier test edited (a test's attack stays its own)."""
    for event_id in reversed(console.event_ids):
        block_id, _ = _block(console, event_id)
        if block_id not in _TOUCHED:
            _TOUCHED.add(block_id)
            return event_id
    raise AssertionError("no untouched block left")


def _event(console: Console, event_id: str) -> tuple[str, dict[str, Any]]:
    hit = console.es.search(index="audit-events", query={"ids": {"values": [event_id]}})
    doc = hit["hits"]["hits"][0]
    return doc["_index"], doc["_source"]


def _block(console: Console, event_id: str) -> tuple[str, dict[str, Any]]:
    hits = console.es.search(index="audit-blocks", query=holding_query([event_id]))["hits"]["hits"]
    hit = next(h for h in hits if event_id in h["_source"]["event_ids"])
    return hit["_id"], hit["_source"]


def _rewrite_event(console: Console, event_id: str) -> dict[str, Any]:
    index, doc = _event(console, event_id)
    doc["audit"]["outcome"] = "success" if doc["audit"]["outcome"] != "success" else "denied"
    console.es.index(index=index, id=event_id, document=doc, refresh=True)
    return doc


def _proof_reasons(page: Any, console: Console, event_id: str) -> dict[str, str]:
    page.goto(console.url(f"/console/events/{event_id}"))
    wait_ready(page, "event")
    status = page.locator("#proof-status")
    assert status.get_attribute("data-result") == "failed", status.inner_text()
    items = page.locator("#proof-reasons li")
    return {
        str(items.nth(i).get_attribute("data-code")): items.nth(i).inner_text()
        for i in range(items.count())
    }


def test_an_edited_event_fails_in_the_browser(console: Console, page: Any) -> None:
    event_id = _untouched_event(console)
    login(page, console, "/console/chain")
    wait_ready(page, "chain")
    _rewrite_event(console, event_id)
    reasons = _proof_reasons(page, console, event_id)
    assert set(reasons) == {"event_modified"}
    assert "changed after sealing" in reasons["event_modified"]
    screenshot(page, "event-tampered")


def test_an_edited_event_with_a_matching_block_record_fails(console: Console, page: Any) -> None:
    """The administrator also writes the edited event's leaf hash into the block record:
    the audit path from that leaf no longer leads to the signed root."""
    event_id = _untouched_event(console)
    doc = _rewrite_event(console, event_id)
    block_id, block = _block(console, event_id)
    pos = block["event_ids"].index(event_id)
    block["leaf_hashes"][pos] = encode_hash(leaf_hash_of_document(doc))
    console.es.index(index="audit-blocks", id=block_id, document=block, refresh=True)
    login(page, console, "/console/chain")
    wait_ready(page, "chain")
    reasons = _proof_reasons(page, console, event_id)
    assert set(reasons) == {"inclusion_failed"}
    assert "signed root" in reasons["inclusion_failed"]


def _forge_block(console: Console, event_id: str, *, same_key_id: bool) -> None:
    """Edit the event, recompute the block's leaves and root, sign with another key."""
    doc = _rewrite_event(console, event_id)
    block_id, block = _block(console, event_id)
    pos = block["event_ids"].index(event_id)
    block["leaf_hashes"][pos] = encode_hash(leaf_hash_of_document(doc))
    cr = CompactRange.from_state(
        block["first_leaf"], [decode_hash(h, "frontier") for h in block["frontier"]]
    )
    cr.extend([decode_hash(h, "leaf") for h in block["leaf_hashes"]])
    old = Checkpoint.from_json_dict(block["checkpoint"])
    forged = sign_checkpoint(
        make_checkpoint(
            origin=old.origin,
            tree_size=old.tree_size,
            root_hash=cr.root(),
            sequence=old.sequence,
            previous_hash=old.previous_hash,
            timestamp_ms=old.timestamp_ms,
        ),
        generate_private_key(),
    )
    cp = forged.to_json_dict()
    if same_key_id:  # claim the genuine key: the signature then cannot verify
        cp["key_id"] = old.key_id
    block["checkpoint"] = cp
    block["root_hash"] = cp["root_hash"]
    block["key_id"] = cp["key_id"]
    console.es.index(index="audit-blocks", id=block_id, document=block, refresh=True)


def test_a_block_re_signed_with_another_key_fails(console: Console, page: Any) -> None:
    event_id = _untouched_event(console)
    _forge_block(console, event_id, same_key_id=False)
    login(page, console, "/console/chain")
    wait_ready(page, "chain")
    reasons = _proof_reasons(page, console, event_id)
    assert set(reasons) == {"unknown_key"}


def test_a_block_re_signed_under_the_genuine_key_id_fails(console: Console, page: Any) -> None:
    event_id = _untouched_event(console)
    _forge_block(console, event_id, same_key_id=True)
    login(page, console, "/console/chain")
    wait_ready(page, "chain")
    reasons = _proof_reasons(page, console, event_id)
    assert set(reasons) == {"bad_signature"}


def test_a_pinned_key_replaces_the_servers_keys(console: Console, page: Any) -> None:
    """Pinning another key makes genuine proofs fail as unknown_key; the user's key wins."""
    event_id = _untouched_event(console)
    login(page, console, "/console/chain")
    wait_ready(page, "chain")
    other = generate_private_key().public_key()
    from otel_audit.integrity.keys import public_key_bytes

    page.fill("#pin-key", encode_hash(public_key_bytes(other)))
    page.click("#pin")
    wait_ready(page, "chain")
    assert "only against the keys you pinned" in page.inner_text("#keys-card")
    assert page.locator(".chain .status").first.get_attribute("data-result") == "bad"
    assert set(_proof_reasons(page, console, event_id)) == {"unknown_key"}
    # Pinning the genuine key (PEM, as `keys generate` writes it) makes it verify again.
    page.goto(console.url("/console/chain"))
    wait_ready(page, "chain")
    page.click("#unpin")
    wait_ready(page, "chain")
    page.fill("#pin-key", console.public_key.read_text())
    page.click("#pin")
    wait_ready(page, "chain")
    page.goto(console.url(f"/console/events/{event_id}"))
    wait_ready(page, "event")
    status = page.locator("#proof-status")
    assert status.get_attribute("data-result") == "verified", page.inner_text("#integrity")
    assert "pinned in this browser" in page.inner_text("#integrity")
