"""The console in real headless Chromium: log in, filter, page, open an event, see its
proof verified; a tampered event fails; exports download; no token, no data; every page
view is in the read audit."""

from __future__ import annotations

import csv
import io
import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import (
    CHAIN,
    FORMULA,
    MARKUP,
    STATS_TOKEN,
    SUBJECT,
    TOKEN,
    WITNESS_NAME,
    Console,
    login,
    screenshot,
    wait_ready,
)

pytestmark = pytest.mark.browser


def _status(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


def _audits(console: Console, subject: str = SUBJECT) -> list[dict[str, Any]]:
    console.es.indices.refresh(index="audit-events*")
    hits = console.es.search(
        index="audit-events",
        query={
            "bool": {
                "filter": [
                    {"term": {"user.id": subject}},
                    {"term": {"audit.resource.type": "audit_log"}},
                ]
            }
        },
        size=1000,
        sort=[{"@timestamp": "asc"}],
    )["hits"]["hits"]
    return [h["_source"] for h in hits]


def test_reads_without_a_token_are_refused(console: Console, page: Any) -> None:
    for path in (
        "/api/v1/events",
        "/api/v1/events/" + console.event_ids[0],
        f"/api/v1/events/{console.event_ids[0]}/proof",
        "/api/v1/export?format=csv",
        "/api/v1/chains",
        f"/api/v1/traces/{console.trace_ids[0]}",
    ):
        assert _status(console.url(path)) == 401, path
        assert _status(console.url(path), "not-a-token") == 401, path
    # A stats-only token may not read events either (and the refusal is recorded).
    assert _status(console.url("/api/v1/events"), STATS_TOKEN) == 403
    page.goto(console.url(f"/console/events/{console.event_ids[0]}"))
    page.wait_for_selector("#login-form")
    assert "/console/login" in page.url
    screenshot(page, "login")
    page.fill("#token", "a-wrong-token")
    page.click("#login")
    page.wait_for_selector("#login-message.error")
    assert "not valid" in page.inner_text("#login-message")


def test_login_filter_page_and_open_a_verified_event(console: Console, page: Any) -> None:
    login(page, console, "/console/events?service=billing&limit=5")
    wait_ready(page, "search")
    page.locator("#who", has_text=SUBJECT).wait_for()
    rows = page.locator("#events tbody tr")
    assert rows.count() == 5
    first_ids = rows.evaluate_all("rs => rs.map(r => r.dataset.eventId)")
    services = page.locator("#events tbody tr td:nth-child(6)").all_inner_texts()
    assert set(services) == {"billing"}
    screenshot(page, "search")
    page.click("#next-page")
    page.locator("#pager", has_text="page 2").wait_for()
    wait_ready(page, "search")
    second_ids = page.locator("#events tbody tr").evaluate_all(
        "rs => rs.map(r => r.dataset.eventId)"
    )
    assert len(second_ids) == 5 and not set(first_ids) & set(second_ids)

    # Filter through the form: failures of one action.
    page.click("#nav-search")
    wait_ready(page, "search")
    page.fill("#f-action", "stock.*")
    page.select_option("#f-outcome", "failure")
    page.click("#search")
    page.wait_for_url("**/console/events?action=stock.*&outcome=failure*")
    wait_ready(page, "search")
    outcomes = page.locator("#events tbody tr td:nth-child(3)").all_inner_texts()
    assert outcomes and set(outcomes) == {"failure"}

    page.locator("#events a.event-link").first.click()
    wait_ready(page, "event")
    status = page.locator("#proof-status")
    assert status.get_attribute("data-result") == "verified", status.inner_text()
    assert "Proof verified in this browser" in status.inner_text()
    assert "configured on the server" in page.inner_text("#integrity")
    # The event's trace as a timeline, the event itself marked.
    assert page.locator("#timeline .tl-row.span").count() >= 3
    assert page.locator("#timeline .tl-event.current").count() == 1
    screenshot(page, "event")

    page.click("#trace-link")
    wait_ready(page, "trace")
    assert page.locator("#timeline .tl-row.highlight").count() == 1
    services_seen = page.inner_text("#timeline .tl-axis")
    for svc in ("billing", "inventory", "storefront"):
        assert svc in services_seen
    screenshot(page, "trace")


def test_trace_link_format_for_jaeger_grafana_tempo(console: Console, page: Any) -> None:
    """A trace UI links to /console/traces/{traceId} (span: ?span={spanId})."""
    trace_id = console.trace_ids[1]
    login(page, console, f"/console/traces/{trace_id}")
    wait_ready(page, "trace")
    assert trace_id in page.inner_text("h1")
    page.click("text=Search this trace's audit events")
    wait_ready(page, "search")
    assert page.locator("#events tbody tr").count() >= 3
    assert page.input_value("#f-trace_id") == trace_id


def _chains(console: Console) -> dict[str, Any]:
    req = urllib.request.Request(console.url("/api/v1/chains"))
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        body: dict[str, Any] = json.loads(resp.read())
    return body


def _wait_cosigned_and_verified(console: Console, timeout_s: float = 90.0) -> dict[str, Any]:
    """Until a scheduled verify run completed after everything was sealed, and the witness
    cosigned one of the chain's checkpoints. (Each poll is itself an audited read, sealed in
    a block of its own: polling slowly keeps the chain from growing needlessly.)"""
    since_ms = time.time_ns() // 1_000_000
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = _chains(console)
        sv = body["scheduled_verify"]
        chain = next(c for c in body["chains"] if c["chain_id"] == CHAIN)
        cosigned = [s for s in chain["witness"]["cosignatures"] if s["status"] == "valid"]
        if sv["completed_ms"] is not None and sv["completed_ms"] > since_ms and cosigned:
            return body
        time.sleep(1.0)
    raise AssertionError(f"no verify run and cosignature within {timeout_s} s: {body}")


def test_chains_json_has_cosignatures_and_the_last_scheduled_verify(console: Console) -> None:
    body = _wait_cosigned_and_verified(console)
    chain = next(c for c in body["chains"] if c["chain_id"] == CHAIN)
    witness = chain["witness"]
    vkey_name, vkey_id = console.witness_vkey.split("+")[:2]
    assert witness["configured"] == [{"name": WITNESS_NAME, "key_id": vkey_id}]
    assert witness["problem"] is None
    assert witness["sequence"] <= witness["newest_sequence"]
    assert witness["tree_size"] <= chain["last_checkpoint"]["tree_size"]
    [cosig] = witness["cosignatures"]
    assert (cosig["name"], cosig["key_id"], cosig["status"]) == (vkey_name, vkey_id, "valid")
    assert abs(cosig["timestamp"] - time.time()) < 600
    sv = body["scheduled_verify"]
    assert sv["interval_s"] == 4
    assert sv["stale"] is False
    assert sv["duration_s"] is not None and sv["duration_s"] >= 0
    assert sv["events_checked"] >= len(console.event_ids)
    assert all(isinstance(n, int) and n > 0 for n in sv["findings"].values()), sv


def test_chain_status_page_checks_the_newest_checkpoint(console: Console, page: Any) -> None:
    _wait_cosigned_and_verified(console)
    with page.expect_response(lambda r: r.url.endswith("/api/v1/chains")) as answer:
        login(page, console, "/console/chain")
    wait_ready(page, "chain")
    body = answer.value.json()  # exactly what the page rendered
    card = page.locator(f".chain[data-chain={CHAIN}]")
    assert card.locator(".status").get_attribute("data-result") == "ok", card.inner_text()
    assert "signature verified in this browser" in card.inner_text()
    assert "tree size" in card.locator(".last-block").inner_text()
    witness = card.locator(".witness")
    assert witness.locator("[data-witness=cosigned]").count() == 1, witness.inner_text()
    valid = witness.locator(".cosignature[data-status=valid]")
    assert valid.count() == 1, witness.inner_text()
    [cosig] = next(c for c in body["chains"] if c["chain_id"] == CHAIN)["witness"]["cosignatures"]
    when = datetime.fromtimestamp(cosig["timestamp"], UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    key_id = console.witness_vkey.split("+")[1]
    assert valid.inner_text().startswith(f"{WITNESS_NAME} key {key_id}, {when}: ")
    assert "valid (checked by the server)" in valid.inner_text()
    sv = body["scheduled_verify"]
    verify = page.locator("#scheduled-verify")
    kinds = sorted(sv["findings"].items())
    status = verify.locator(".status")
    if kinds:
        assert status.get_attribute("data-verify") == "bad"
        listed = ", ".join(f"{k}: {n}" for k, n in kinds)
    else:
        assert (status.get_attribute("data-verify"), status.inner_text()) == (
            "ok",
            "clean: no findings",
        )
        listed = "none"
    assert sorted(verify.locator(".verify-findings").inner_text().split(", ")) == sorted(
        listed.split(", ")
    )
    done = datetime.fromtimestamp(sv["completed_ms"] / 1000, UTC)
    iso = done.strftime("%Y-%m-%dT%H:%M:%S.") + f"{sv['completed_ms'] % 1000:03d}Z"
    assert verify.locator(".verify-time").inner_text().startswith(iso + " (")
    assert verify.locator(".verify-duration").inner_text() == f"{sv['duration_s']:.2f} s"
    assert verify.locator(".verify-stale").inner_text() == "no"
    screenshot(page, "chain")


def test_exports_download_and_csv_is_safe_in_spreadsheets(
    console: Console, page: Any, tmp_path: Path
) -> None:
    login(page, console, "/console/events?actor=mallory")
    wait_ready(page, "search")
    with page.expect_download() as info:
        page.click("#export-csv")
    path = tmp_path / "export.csv"
    info.value.save_as(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    assert [r["event.id"] for r in rows] == [console.formula_event_id]
    # The formula is kept as text: a leading quote, the value otherwise intact.
    assert rows[0]["audit.resource.id"] == "'" + FORMULA
    page.locator("#export-message", has_text=": 1 events").wait_for()

    with page.expect_download() as info:
        page.click("#export-ndjson")
    nd = tmp_path / "export.ndjson"
    info.value.save_as(nd)
    docs = [json.loads(line) for line in nd.read_text().splitlines()]
    assert [d["event"]["id"] for d in docs] == [console.formula_event_id]
    assert docs[0]["audit"]["resource"]["id"] == FORMULA


def test_every_page_view_is_in_the_read_audit(console: Console, page: Any) -> None:
    before = len(_audits(console))
    event_id = console.event_ids[2]
    trace_id = console.trace_ids[2]
    login(page, console, "/console/events?outcome=success&limit=3")
    wait_ready(page, "search")
    page.goto(console.url(f"/console/events/{event_id}"))
    wait_ready(page, "event")
    page.goto(console.url(f"/console/traces/{trace_id}"))
    wait_ready(page, "trace")
    page.goto(console.url("/console/chain"))
    wait_ready(page, "chain")
    records = _audits(console)[before:]
    seen = {(r["event"]["action"], r["audit"]["resource"]["id"]) for r in records}
    assert ("audit_log.search", "audit-events") in seen
    assert ("audit_log.read", event_id) in seen
    assert ("audit_log.prove", event_id) in seen
    assert ("audit_log.read", trace_id) in seen
    assert ("audit_log.status", "audit-blocks") in seen
    search = next(r for r in records if r["event"]["action"] == "audit_log.search")
    query = json.loads(search["audit"]["extra"]["audit_log.query"])
    assert query["filters"] == {"outcome": ["success"]}
    assert "Chrome" in search["user_agent"]["original"]
    assert {r["user"]["id"] for r in records} == {SUBJECT}


def test_export_is_in_the_read_audit(console: Console) -> None:
    req = urllib.request.Request(console.url("/api/v1/export?format=ndjson&actor=mallory"))
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/x-ndjson")
        resp.read()
    exports = [r for r in _audits(console) if r["event"]["action"] == "audit_log.export"]
    assert exports
    query = json.loads(exports[-1]["audit"]["extra"]["audit_log.query"])
    assert query["filters"] == {"actor": ["mallory"]} and query["format"] == "ndjson"


def test_stored_markup_is_shown_as_text(console: Console, page: Any) -> None:
    """An emitter's HTML in stored values never becomes markup in the console, whatever
    the Content-Security-Policy (which forbids inline scripts besides)."""
    req = urllib.request.Request(console.url("/console/"))
    with urllib.request.urlopen(req, timeout=10) as resp:
        csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    login(page, console, f"/console/events/{console.formula_event_id}")
    wait_ready(page, "event")
    assert MARKUP in page.inner_text("#fields")
    assert page.locator("main img").count() == 0
    assert page.locator("#injected").count() == 0
    assert page.evaluate("() => window.pwned") is None
    page.goto(console.url("/console/events?actor=mallory"))
    wait_ready(page, "search")
    assert page.locator("main img, #injected").count() == 0
