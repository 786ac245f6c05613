"""``make run``: the whole pipeline on this machine, in the foreground.

1. starts the local Elasticsearch (or reuses the one at ``OTEL_AUDIT_ES_URL``),
2. installs the index templates,
3. starts the receiver (``otel-audit serve``) on the default ports,
4. runs three demo services that send a burst of checkouts through the real OTel SDK
   (nested spans across services, a few deliberate schema violations),
5. prints what arrived: counts by service, action and outcome, and the rejected records
   with their reasons,
6. keeps serving until Ctrl-C, then stops everything it started.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from demo.services import TrafficReport, start_demo_services
from indexer.indices import EVENTS_PATTERN, REJECTED_PATTERN

__all__ = ["run_demo", "send_traffic"]


def _say(message: str) -> None:
    print(message, flush=True)


def state_dir() -> Path:
    """Where ``make run`` keeps the receiver's spool, keys and checkpoints."""
    base = os.environ.get("OTEL_AUDIT_STATE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "otel-audit" / "demo"


def send_traffic(
    endpoint: str,
    *,
    protocol: str = "grpc",
    checkouts: int = 40,
    with_violations: bool = True,
    ordinary_logs: bool = False,
) -> TrafficReport:
    """Run the demo services and send ``checkouts`` checkouts through them."""
    with start_demo_services(endpoint, protocol, ordinary_logs=ordinary_logs) as cluster:
        for n in range(checkouts):
            cluster.checkout(n, with_violations=with_violations and n % 15 == 3)
    return cluster.report


def _demo_key(integrity: Path) -> Path:
    """The demo chain's signing key, made here once where the receiver's development-key
    fallback looks for it, so the console can be given its public key from the start."""
    from otel_audit.integrity.keys import PUBLIC_KEY_FILENAME, generate_private_key, write_key_pair

    keys = integrity / "keys"
    if not (keys / "signing-key.pem").exists():
        write_key_pair(generate_private_key(), keys)
    return keys / PUBLIC_KEY_FILENAME


def _demo_token(state: Path, public_key: Path) -> str:
    """A reader token for the demo's query API, kept in the state dir (only its hash in config)."""
    token_file = state / "demo-token"
    if token_file.exists():
        token = token_file.read_text().strip()
    else:
        token = secrets.token_urlsafe(24)
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
    digest = hashlib.sha256(token.encode()).hexdigest()
    (state / "demo.yaml").write_text(
        "# Written by `make run`: the demo's query API token (its SHA-256 only).\n"
        "query:\n"
        "  tokens:\n"
        f"    - subject: demo\n      sha256: {digest}\n      roles: [reader]\n"
        "console:\n"
        f"  public_keys: [{json.dumps(str(public_key))}]\n"
    )
    return token


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the receiver exited with code {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the receiver was not ready at {url} after {timeout_s:.0f} s")


def _table(title: str, rows: Iterable[tuple[Any, ...]], headers: tuple[str, ...]) -> None:
    rows = list(rows)
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(str(c))) for w, c in zip(widths, row, strict=True)]
    _say(f"\n{title}")
    _say("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        _say("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def print_arrivals(es: Any, report: TrafficReport, since: str, timeout_s: float = 30.0) -> int:
    """Wait until the sent events are searchable, then print what arrived; returns #stored."""
    ids = report.event_ids
    deadline = time.monotonic() + timeout_s
    stored = 0
    while time.monotonic() < deadline:
        es.indices.refresh(index="audit-*", ignore_unavailable=True, allow_no_indices=True)
        stored = es.count(index=EVENTS_PATTERN, query={"terms": {"event.id": ids}})["count"]
        if stored >= len(ids):
            break
        time.sleep(0.5)
    # Nested terms aggregations: multi_terms is not in the bare server.
    aggs = es.search(
        index=EVENTS_PATTERN,
        size=0,
        query={"terms": {"event.id": ids}},
        aggs={
            "service": {
                "terms": {"field": "service.name", "size": 20},
                "aggs": {
                    "action": {
                        "terms": {"field": "event.action", "size": 50},
                        "aggs": {"outcome": {"terms": {"field": "audit.outcome", "size": 4}}},
                    }
                },
            },
            "traces": {"cardinality": {"field": "trace.id"}},
        },
    )["aggregations"]
    rows = [
        (svc["key"], act["key"], out["key"], out["doc_count"])
        for svc in aggs["service"]["buckets"]
        for act in svc["action"]["buckets"]
        for out in act["outcome"]["buckets"]
    ]
    _table(
        f"Stored audit events: {stored} of {len(ids)} valid events sent "
        f"({aggs['traces']['value']} traces)",
        rows,
        ("service", "action", "outcome", "count"),
    )
    rejected = es.search(
        index=REJECTED_PATTERN,
        size=50,
        query={"range": {"@timestamp": {"gte": since}}},
        sort=[{"@timestamp": "asc"}],
        ignore_unavailable=True,
    )["hits"]["hits"]
    _say(f"\nRejected records (dead-letter index audit-rejected-*): {len(rejected)}")
    for hit in rejected:
        src = hit["_source"]
        reasons = src.get("reasons") or []
        text = "; ".join(
            f"{r.get('field')}: {r.get('message')}" if isinstance(r, dict) else str(r)
            for r in reasons
        )
        service = (src.get("service") or {}).get("name", "?")
        _say(f"  - {service}: {text}")
    return int(stored)


def _start_clean(es: Any, state: Path) -> None:
    """Start each demo from an empty store on the project's local node.

    The local node is scratch space that the tests also write to (with their own keys
    and chains), and a state directory left by an earlier run names checkpoints that
    node may no longer hold. Either would make the printed ``verify`` command report
    findings that belong to no tampering. So both go: the project's indices on that node,
    and the demo's state directory (keys, checkpoints, spool, local S3 data). With
    ``OTEL_AUDIT_ES_URL`` set, nothing is deleted.
    """
    from indexer.local_es.state import wipe_project_state

    if state.exists():
        shutil.rmtree(state)
    wipe_project_state(es)
    _say(f"== starting clean: the project's indices on the local node and {state} removed")


def run_demo(
    checkouts: int = 40,
    keep_serving: bool = True,
    *,
    grpc_port: int = 4317,
    http_port: int = 4318,
    query_port: int = 8080,
) -> int:
    """The ``make run`` job; returns the process exit code.

    Without ``keep_serving`` it returns once the summary is printed: 0 when every valid
    event sent was stored, 1 otherwise.
    """
    from elasticsearch import Elasticsearch

    from indexer.local_es import LocalElasticsearch
    from indexer.templates import install_templates

    own_node = "OTEL_AUDIT_ES_URL" not in os.environ
    es_url = os.environ.get("OTEL_AUDIT_ES_URL", "http://127.0.0.1:9200")
    node = LocalElasticsearch(url=es_url)
    _say(f"== Elasticsearch at {es_url}")
    started_es = node.ensure_started()
    receiver: subprocess.Popen[bytes] | None = None
    lifecycle: Any = None
    try:
        es = Elasticsearch(es_url, request_timeout=30)
        state = state_dir()
        if own_node:
            _start_clean(es, state)
        _say("== installing index templates: " + ", ".join(install_templates(es)))
        state.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.setdefault("OTEL_AUDIT_ES_URL", es_url)
        env.setdefault("OTEL_AUDIT_SPOOL_DIR", str(state / "spool"))
        env.setdefault("OTEL_AUDIT_INTEGRITY__STATE_DIR", str(state / "integrity"))
        integrity = Path(env["OTEL_AUDIT_INTEGRITY__STATE_DIR"])
        public_key = _demo_key(integrity)
        token = _demo_token(state, public_key)
        from demo.lifecycle_demo import LifecycleDemo

        lifecycle = LifecycleDemo(state)
        lifecycle.add_to(state / "demo.yaml")
        env["OTEL_AUDIT_GRPC_ENDPOINT"] = f"127.0.0.1:{grpc_port}"
        env["OTEL_AUDIT_HTTP_ENDPOINT"] = f"127.0.0.1:{http_port}"
        env["OTEL_AUDIT_QUERY_API_ENDPOINT"] = f"127.0.0.1:{query_port}"
        _say(
            f"== starting the receiver: otel-audit serve (OTLP gRPC 127.0.0.1:{grpc_port}, "
            f"HTTP 127.0.0.1:{http_port}, query API 127.0.0.1:{query_port})"
        )
        receiver = subprocess.Popen(
            [sys.executable, "-m", "otel_audit.cli", "serve", "--config", str(state / "demo.yaml")],
            env=env,
            stdout=open(state / "receiver.log", "ab"),  # noqa: SIM115 - lives with the child
            stderr=subprocess.STDOUT,
        )
        _wait_ready(f"http://127.0.0.1:{http_port}/readyz", receiver)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
        _say(f"== sending {checkouts} checkouts from storefront -> billing -> inventory")
        report = send_traffic(f"127.0.0.1:{grpc_port}", checkouts=checkouts)
        _say(
            f"   sent {len(report.event_ids)} valid and {len(report.invalid_event_ids)} "
            f"deliberately invalid audit events in {len(report.trace_ids)} traces"
        )
        stored = print_arrivals(es, report, since)
        archived = lifecycle.show(es, http_port, query_port, token)
        example_trace = report.trace_ids[0] if report.trace_ids else "TRACE_ID"
        example_event = report.event_ids[0] if report.event_ids else "EVENT_ID"
        api = f"http://127.0.0.1:{query_port}"
        q = shlex.quote
        key = q(str(public_key))
        _say(
            f"\nQuery it (a reader token for this demo is in {state / 'demo-token'}):\n"
            f"  export OTEL_AUDIT_API_URL={api} OTEL_AUDIT_API_TOKEN={token}\n"
            "  otel-audit query --outcome denied\n"
            f"  otel-audit trace {example_trace}\n"
            f"\nOr open the console: {api}/console/ (log in with the token above).\n"
            "\nVerify the demo's chain against its public key and external checkpoints:\n"
            f"  export OTEL_AUDIT_ES_URL={es_url}\n"
            f"  otel-audit verify --public-key {key} "
            f"--checkpoint-dir {q(str(integrity / 'checkpoints'))}\n"
            f"  otel-audit prove {example_event} --out proof.json\n"
            f"  otel-audit verify-proof proof.json --public-key {key}"
        )
        if not keep_serving:
            return 0 if stored == len(report.event_ids) and archived else 1
        _say(
            "\nThe receiver keeps serving. Point your services at it:\n"
            f"  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{grpc_port} (gRPC) or "
            f"http://127.0.0.1:{http_port} (HTTP)\n"
            f"  receiver log: {state / 'receiver.log'}\n"
            "Ctrl-C stops everything this command started."
        )
        receiver.wait()
        return 0
    except KeyboardInterrupt:
        _say("\n== stopping")
        return 0
    finally:
        if receiver is not None and receiver.poll() is None:
            receiver.send_signal(signal.SIGTERM)
            try:
                receiver.wait(timeout=30)
            except subprocess.TimeoutExpired:
                receiver.kill()
        if lifecycle is not None:
            lifecycle.stop()
        if started_es:
            node.stop()
            _say("== stopped the local Elasticsearch this command started")
