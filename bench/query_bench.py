"""Query API latency on a realistic data set in the real Elasticsearch.

Loads (once; reused on later runs) synthetic audit events with realistic cardinalities
(5k actors, 50 actions, 20k resources, 10 services, traces of 3-10 spans with a few events
each) plus their spans into ``bench-audit-events-*`` / ``bench-audit-spans-*`` (own
templates and aliases, so the test fixtures' wipe of ``audit-*`` never touches them),
then measures p50/p95/p99 of the main filters and the trace view through the HTTP API
with bearer auth, with every query recorded as an audit event in process (as inside
``otel-audit serve``) and, for comparison, with query auditing off.

    OTEL_AUDIT_ES_URL=http://127.0.0.1:9250 python -m bench.query_bench [--events 1000000]

``--edge`` measures only the production edge: the API over HTTPS (a certificate made for
the run, a fresh TLS connection per client session, kept alive as a client would), the
token scoped to 3 of 20 tenants and every query audited, and checks the issue's target
(p95 under 50 ms for every filtered query: every row but the trace view and stats)::

    OTEL_AUDIT_ES_URL=http://127.0.0.1:9250 python -m bench.query_bench --events 1000000 --edge

Documents are built by the real ``build_document`` / ``build_span_document`` in worker
processes; loading uses parallel bulk requests with refresh off and async translog (bench
indices only), then one refresh and a force merge, as older daily indices would be.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson

from otel_audit.emit import event_id_at

PREFIX = "bench-audit-"
EVENTS_ALIAS = PREFIX + "events"
SPANS_ALIAS = PREFIX + "spans"
META_INDEX = PREFIX + "meta"
DATA_VERSION = 2
TENANTS = 20
SCOPE = ("t-03", "t-07", "t-11")
"""The tenants of the scoped token: 3 of 20, about 15 % of the events."""
DAYS = 7
EDGE_P95_MS = 50.0
"""The target of ``--edge``: p95 of every filtered query."""
UNFILTERED = ("trace view", "stats 24h")
"""The rows ``--edge`` does not hold to it (not filtered event searches)."""

ACTORS = 5000
RESOURCES = 20_000
SERVICES = [
    f"svc-{name}"
    for name in (
        "gateway",
        "orders",
        "billing",
        "users",
        "inventory",
        "shipping",
        "search",
        "reports",
        "auth",
        "notify",
    )
]
NOUNS = [
    "invoice",
    "order",
    "user",
    "payment",
    "report",
    "shipment",
    "product",
    "role",
    "config",
    "api_key",
]
VERBS = ["create", "read", "update", "delete", "export"]
ACTIONS = [f"{n}.{v}" for n in NOUNS for v in VERBS]
CATEGORY_OF = {
    "create": "data_change",
    "read": "data_access",
    "update": "data_change",
    "delete": "data_change",
    "export": "data_access",
}
WORDS = [
    "approved",
    "rejected",
    "refund",
    "manual",
    "batch",
    "nightly",
    "retry",
    "escalated",
    "flagged",
    "quarterly",
    "migration",
    "customer",
    "partner",
    "vendor",
    "bulk",
    "override",
    "emergency",
    "scheduled",
    "review",
    "audit",
    "compliance",
    "gdpr",
    "request",
    "ticket",
    "incident",
    "rollback",
    "hotfix",
    "import",
    "sync",
    "cleanup",
]
TOKEN = "bench-reader-token"


def _trace_docs(
    trace_no: int, base_ns: int, span_ns: int, fast: bool = True
) -> tuple[list[Any], list[Any]]:
    from indexer.indices import event_index, span_index
    from indexer.spans import build_span_document
    from otel_audit.document import build_document
    from otel_audit.record import LogRecordData
    from otel_audit.span_record import SpanData

    rng = random.Random(trace_no * 7919 + 17)
    trace_id = format(rng.getrandbits(128) | 1, "032x")
    start = base_ns + rng.randrange(span_ns)
    n_spans = rng.randint(3, 10)
    actor = f"u-{int(rng.paretovariate(1.2) * 7) % ACTORS:05d}"
    events: list[Any] = []
    spans: list[Any] = []
    span_ids: list[str] = []
    t = start
    services = rng.sample(SERVICES, k=min(len(SERVICES), rng.randint(2, 5)))
    for k in range(n_spans):
        sid = format(rng.getrandbits(64) | 1, "016x")
        parent = "" if k == 0 else span_ids[rng.randrange(len(span_ids))]
        dur = rng.randint(200_000, 80_000_000)
        svc = services[k % len(services)]
        span = SpanData(
            trace_id=trace_id,
            span_id=sid,
            parent_span_id=parent,
            name=f"{svc} op{k}",
            kind=2 if k == 0 else rng.choice((1, 2, 3)),
            start_time_unix_nano=t,
            end_time_unix_nano=t + dur,
            status_code=rng.choice((0, 0, 0, 1, 2)),
            attributes={
                "http.request.method": rng.choice(("GET", "POST", "PUT")),
                "http.route": f"/{NOUNS[k % len(NOUNS)]}s/{{id}}",
            },
            resource={"service.name": svc},
        )
        spans.append(
            (span_index(t, PREFIX + "spans-"), f"{trace_id}-{sid}", build_span_document(span))
        )
        span_ids.append(sid)
        t += rng.randint(100_000, 5_000_000)
    n_events = rng.randint(2, 8)
    for _ in range(n_events):
        noun = rng.choice(NOUNS)
        verb = rng.choice(VERBS)
        res_no = int(rng.paretovariate(1.1) * 3) % RESOURCES
        res_id = f"{noun}-{res_no:05d}"
        svc = rng.choice(services)
        ts = start + rng.randrange(max(1, t - start))
        outcome = rng.choices(("success", "failure", "denied", "unknown"), (90, 6, 3, 1))[0]
        words = " ".join(rng.sample(WORDS, 3))
        rec = LogRecordData(
            attributes={
                "audit.event.id": event_id_at(ts // 1_000_000, rng.getrandbits(74)),
                "audit.action": f"{noun}.{verb}",
                "audit.category": CATEGORY_OF[verb],
                "audit.outcome": outcome,
                "audit.actor.id": actor,
                "audit.actor.type": "user",
                "audit.actor.name": f"User {actor[2:]}",
                "audit.resource.type": noun,
                "audit.resource.id": res_id,
                "client.address": f"10.{rng.randrange(256)}.{rng.randrange(1, 255)}.7",
                "audit.tenant.id": f"t-{trace_no % TENANTS:02d}",
            },
            resource={"service.name": svc, "service.version": "1.4.2"},
            time_unix_nano=ts,
            observed_time_unix_nano=ts,
            body=f"{actor} {verb} {noun} {res_id}: {words}",
            trace_id=trace_id,
            span_id=rng.choice(span_ids),
            flags=1,
        )
        doc = (_fast_document if fast else build_document)(rec, received_ns=ts + 2_000_000)
        events.append((event_index(ts, PREFIX + "events-"), doc["event"]["id"], doc))
    return events, spans


def _fast_document(rec: Any, received_ns: int) -> dict[str, Any]:
    """What ``build_document`` returns for the records made here, built directly: the
    real builder dominates the load time. :func:`_check_fast_document` proves them equal."""
    from otel_audit.document import content_hash, format_ns
    from otel_audit.schema import load_schema

    schema = load_schema()
    a = rec.attributes
    ts = format_ns(rec.time_unix_nano)
    ip = a["client.address"]
    return {
        "@timestamp": ts,
        "event": {
            "id": a["audit.event.id"],
            "kind": "event",
            "category": list(schema.ecs_category[a["audit.category"]]),
            "type": schema.ecs_type.types(
                a["audit.category"], a["audit.action"], a["audit.outcome"]
            ),
            "outcome": schema.ecs_outcome[a["audit.outcome"]],
            "dataset": "otel_audit.events",
            "ingested": format_ns(received_ns),
            "created": ts,
            "action": a["audit.action"],
        },
        "audit": {
            "schema_version": schema.version,
            "event_id_source": "emitter",
            "content_hash": content_hash(rec),
            "category": a["audit.category"],
            "outcome": a["audit.outcome"],
            "actor": {"type": a["audit.actor.type"]},
            "resource": {"type": a["audit.resource.type"], "id": a["audit.resource.id"]},
            "trace_flags": rec.flags,
            "correlation_id": rec.trace_id,
            "untrusted": ["client.address"],
        },
        "user": {"id": a["audit.actor.id"], "name": a["audit.actor.name"]},
        "client": {"address": ip, "ip": ip},
        "source": {"ip": ip},
        "related": {"user": sorted({a["audit.actor.id"], a["audit.actor.name"]}), "ip": [ip]},
        "service": {
            "name": rec.resource["service.name"],
            "version": rec.resource["service.version"],
        },
        "trace": {"id": rec.trace_id},
        "span": {"id": rec.span_id},
        "organization": {"id": a["audit.tenant.id"]},
        "ecs": {"version": schema.constant("ecs_version")},
        "message": rec.body,
    }


def _check_fast_document() -> None:
    import time as _t

    now = _t.time_ns()
    slow, _ = _trace_docs(12345, now - 10**12, 10**12, fast=False)
    quick, _ = _trace_docs(12345, now - 10**12, 10**12, fast=True)
    assert slow == quick, "bench documents differ from build_document's"


def _chunk(args: tuple[int, int, int, int]) -> tuple[bytes, bytes, int, int]:
    first, count, base_ns, span_ns = args
    ev_lines: list[bytes] = []
    sp_lines: list[bytes] = []
    n_ev = n_sp = 0
    for trace_no in range(first, first + count):
        events, spans = _trace_docs(trace_no, base_ns, span_ns)
        for index, _id, doc in events:
            ev_lines.append(orjson.dumps({"index": {"_index": index, "_id": _id}}))
            ev_lines.append(orjson.dumps(doc))
        for index, _id, doc in spans:
            sp_lines.append(orjson.dumps({"index": {"_index": index, "_id": _id}}))
            sp_lines.append(orjson.dumps(doc))
        n_ev += len(events)
        n_sp += len(spans)
    return b"\n".join(ev_lines) + b"\n", b"\n".join(sp_lines) + b"\n", n_ev, n_sp


def _templates() -> dict[str, dict[str, Any]]:
    from indexer.spans import SpansConfig, spans_template
    from indexer.templates import TemplateSettings, events_template
    from otel_audit.schema import load_schema

    schema = load_schema()
    settings = TemplateSettings()
    ev = events_template(schema, settings)
    ev["index_patterns"] = [PREFIX + "events-*"]
    ev["template"]["aliases"] = {EVENTS_ALIAS: {}}
    sp = spans_template(schema, settings, SpansConfig(index_prefix=PREFIX + "spans-"))
    sp["template"]["aliases"] = {SPANS_ALIAS: {}}
    for t in (ev, sp):
        t["priority"] = 300
        idx = t["template"]["settings"]["index"]
        # Bulk load speed: no refresh and async translog while loading (bench data only).
        idx["refresh_interval"] = "-1"
        idx["translog"] = {"durability": "async"}
    return {"bench-otel-audit-events": ev, "bench-otel-audit-spans": sp}


async def _es(
    http: aiohttp.ClientSession,
    es: str,
    method: str,
    path: str,
    body: Any = None,
    raw: bytes | None = None,
) -> Any:
    data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
    ctype = "application/x-ndjson" if raw is not None else "application/json"
    async with http.request(method, es + path, data=data, headers={"Content-Type": ctype}) as r:
        text = await r.read()
        if r.status >= 400 and r.status != 404:
            raise RuntimeError(f"{method} {path}: {r.status} {text[:300]!r}")
        return orjson.loads(text) if text else None


async def _loaded(http: aiohttp.ClientSession, es: str) -> dict[str, Any] | None:
    doc = await _es(http, es, "GET", f"/{META_INDEX}/_doc/load")
    if doc and doc.get("found"):
        src: dict[str, Any] = doc["_source"]
        return src
    return None


async def load(es: str, target_events: int) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        meta = await _loaded(http, es)
        if meta and meta.get("version") == DATA_VERSION and meta["events"] >= target_events:
            print(
                f"reusing loaded data: {meta['events']:,} events, {meta['spans']:,} spans",
                file=sys.stderr,
            )
            return meta
        _check_fast_document()
        await _es(http, es, "DELETE", f"/{PREFIX}*?expand_wildcards=all")
        for name, body in _templates().items():
            await _es(http, es, "PUT", f"/_index_template/{name}", body)
        now = time.time_ns()
        span_ns = DAYS * 86400 * 1_000_000_000
        base_ns = now - span_ns
        traces_per_chunk = 400
        began = time.monotonic()
        n_ev = n_sp = 0
        sem = asyncio.Semaphore(3)
        pending: set[asyncio.Task[None]] = set()
        errors: list[str] = []

        async def send(body: bytes) -> None:
            async with sem:
                resp = await _es(http, es, "POST", "/_bulk", raw=body)
                if resp.get("errors"):
                    bad = [i for i in resp["items"] if "error" in next(iter(i.values()))]
                    errors.append(str(bad[:1]))

        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(max(1, (os.cpu_count() or 2))) as pool:

            def chunks() -> Any:
                trace_no = 0
                while True:
                    yield (trace_no, traces_per_chunk, base_ns, span_ns)
                    trace_no += traces_per_chunk

            last = 0.0
            for ev_body, sp_body, e, s in pool.imap(_chunk, chunks()):
                for body in (ev_body, sp_body):
                    while len(pending) >= 4:
                        _, pending = await asyncio.wait(
                            pending, return_when=asyncio.FIRST_COMPLETED
                        )
                    pending.add(asyncio.create_task(send(body)))
                n_ev += e
                n_sp += s
                if errors:
                    raise RuntimeError(f"bulk errors: {errors[0]}")
                el = time.monotonic() - began
                if el - last > 5:
                    last = el
                    print(
                        f"load: {n_ev:,} events, {n_sp:,} spans, {n_ev / el:,.0f} events/s",
                        file=sys.stderr,
                        flush=True,
                    )
                if n_ev >= target_events:
                    break
            pool.terminate()
        if pending:
            await asyncio.wait(pending)
        if errors:
            raise RuntimeError(f"bulk errors: {errors[0]}")
        load_s = time.monotonic() - began
        print(
            f"load: {n_ev:,} events + {n_sp:,} spans in {load_s:.0f} s; refresh + merge...",
            file=sys.stderr,
            flush=True,
        )
        for alias in (EVENTS_ALIAS, SPANS_ALIAS):
            await _es(http, es, "PUT", f"/{alias}/_settings", {"index": {"refresh_interval": "1s"}})
            await _es(http, es, "POST", f"/{alias}/_refresh")
        t0 = time.monotonic()
        await _es(
            http, es, "POST", f"/{PREFIX}events-*,{PREFIX}spans-*/_forcemerge?max_num_segments=1"
        )
        print(f"merge: {time.monotonic() - t0:.0f} s", file=sys.stderr)
        meta = {
            "version": DATA_VERSION,
            "events": n_ev,
            "spans": n_sp,
            "load_s": round(load_s, 1),
            "base_ns": base_ns,
            "span_ns": span_ns,
        }
        await _es(http, es, "PUT", f"/{META_INDEX}/_doc/load?refresh=true", meta)
        return meta


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def measure(
    es: str,
    meta: dict[str, Any],
    iterations: int,
    audit: bool,
    tenants: tuple[str, ...] = ("*",),
    tls: bool = False,
) -> list[tuple[str, list[float], int]]:
    from indexer.query.api import start_query_api
    from indexer.query.auth import hash_token
    from indexer.query.config import QueryConfig, TokenEntry
    from receiver.ingest.consumer import build_consumer

    spool = tempfile.mkdtemp(prefix="query-bench-spool-")
    consumer = build_consumer(SimpleNamespace(es_url=es, spool_dir=spool, bulk_flush_interval_ms=1))
    await consumer.start()
    cfg = QueryConfig(
        endpoint="127.0.0.1:0",
        es_url=es,
        events_index=EVENTS_ALIAS,
        spans_index=SPANS_ALIAS,
        blocks_index=PREFIX + "blocks",
        audit_queries=audit,
        tokens=(
            TokenEntry(
                subject="bench", sha256=hash_token(TOKEN), roles=("reader",), tenants=tenants
            ),
        ),
        max_concurrent_queries_per_token=64,
        max_open_cursors_per_token=10_000,
    )
    ssl_server: Any = None
    ssl_client: Any = None
    certs_dir = tempfile.mkdtemp(prefix="query-bench-tls-")
    if tls:
        import ssl

        from bench.edge_bench import _certificates
        from indexer.tls import ServerTls, TlsConfig

        certs = _certificates(Path(certs_dir))
        ssl_server = ServerTls(
            TlsConfig(cert_file=str(certs["server"]), key_file=str(certs["server_key"]))
        ).ssl_context
        ssl_client = ssl.create_default_context(cafile=str(certs["ca"]))
    runner = await start_query_api(cfg, consumer.consume_logs, ssl_context=ssl_server)
    scheme = "https" if tls else "http"
    api = f"{scheme}://127.0.0.1:{runner.addresses[0][1]}/api/v1"
    rng = random.Random(99)
    results: list[tuple[str, list[float], int]] = []
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {TOKEN}"},
        connector=aiohttp.TCPConnector(ssl=ssl_client) if tls else None,
    ) as http:
        sample = await _es(
            http,
            es,
            "POST",
            f"/{SPANS_ALIAS}/_search",
            {
                "size": 500,
                "_source": ["trace.id"],
                "query": {"function_score": {"random_score": {"seed": 5, "field": "_seq_no"}}},
            },
        )
        traces = sorted({h["_source"]["trace"]["id"] for h in sample["hits"]["hits"]})
        ev_sample = await _es(
            http,
            es,
            "POST",
            f"/{EVENTS_ALIAS}/_search",
            {
                "size": 500,
                "_source": ["user.id", "audit.resource"],
                "query": {"function_score": {"random_score": {"seed": 6, "field": "_seq_no"}}},
            },
        )
        # With a tenant scope, sample what the token can see (its own actors, traces ...).
        ev_query: dict[str, Any] = {
            "function_score": {"random_score": {"seed": 6, "field": "_seq_no"}}
        }
        if "*" not in tenants:
            ev_query = {
                "bool": {"must": ev_query, "filter": {"terms": {"organization.id": list(tenants)}}}
            }
            ev_sample = await _es(
                http,
                es,
                "POST",
                f"/{EVENTS_ALIAS}/_search",
                {
                    "size": 500,
                    "_source": ["user.id", "audit.resource", "trace.id"],
                    "query": ev_query,
                },
            )
            traces = sorted({h["_source"]["trace"]["id"] for h in ev_sample["hits"]["hits"]})
        actors = [h["_source"]["user"]["id"] for h in ev_sample["hits"]["hits"]]
        resources = [h["_source"]["audit"]["resource"] for h in ev_sample["hits"]["hits"]]
        base, span = meta["base_ns"], meta["span_ns"]

        def rfc(ns: int) -> str:
            from otel_audit.document import format_ns

            return format_ns(ns)

        cases: list[tuple[str, Any]] = [
            ("actor", lambda: ("/events", {"actor": rng.choice(actors)})),
            ("action exact", lambda: ("/events", {"action": rng.choice(ACTIONS)})),
            ("action prefix", lambda: ("/events", {"action": rng.choice(NOUNS) + ".*"})),
            (
                "resource",
                lambda: (
                    "/events",
                    (r := rng.choice(resources))
                    and {"resource_type": r["type"], "resource_id": r["id"]},
                ),
            ),
            (
                "outcome + 6h range",
                lambda: (
                    "/events",
                    {
                        "outcome": "failure",
                        "from": rfc(s := base + rng.randrange(span - 6 * 3600 * 10**9)),
                        "to": rfc(s + 6 * 3600 * 10**9),
                    },
                ),
            ),
            ("trace_id", lambda: ("/events", {"trace_id": rng.choice(traces)})),
            ("free text", lambda: ("/events", {"q": " ".join(rng.sample(WORDS, 2))})),
            ("next page (cursor)", None),
            ("trace view", lambda: (f"/traces/{rng.choice(traces)}", {})),
            (
                "stats 24h",
                lambda: (
                    "/stats",
                    {
                        "from": rfc(s := base + rng.randrange(span - 86400 * 10**9)),
                        "to": rfc(s + 86400 * 10**9),
                    },
                ),
            ),
        ]

        async def timed(path: str, params: Any) -> tuple[float, Any]:
            t0 = time.perf_counter()
            async with http.get(api + path, params=params) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{path} {params}: {resp.status} {body[:300]!r}")
            return (time.perf_counter() - t0) * 1000, orjson.loads(body)

        for _ in range(20):  # warm caches and connections
            await timed("/events", {"actor": rng.choice(actors)})
        for name, make in cases:
            lat: list[float] = []
            hits = 0
            for _ in range(iterations):
                if make is None:
                    _, first = await timed(
                        "/events", {"action": rng.choice(NOUNS) + ".*", "limit": "100"}
                    )
                    ms, body = await timed(
                        "/events", {"cursor": first["next_cursor"], "limit": "100"}
                    )
                else:
                    path, params = make()
                    ms, body = await timed(path, params)
                lat.append(ms)
                hits += body.get("count", body.get("span_count", body.get("total", 0)))
            results.append((name, lat, hits // max(1, iterations)))
    await runner.cleanup()
    await consumer.shutdown(5.0)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument(
        "--es-url", default=os.environ.get("OTEL_AUDIT_ES_URL", "http://127.0.0.1:9200")
    )
    parser.add_argument(
        "--edge",
        action="store_true",
        help="only HTTPS + tenant-scoped token + query audit on, against the 50 ms p95 target",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    meta = asyncio.run(load(args.es_url, args.events))
    print(
        f"\ndata: {meta['events']:,} events, {meta['spans']:,} spans in "
        f"{EVENTS_ALIAS}/{SPANS_ALIAS} (loaded in {meta['load_s']} s); {args.iterations} "
        f"requests per row, sequential, {'HTTPS' if args.edge else 'HTTP'} + bearer auth\n"
    )
    modes: list[tuple[str, bool, tuple[str, ...], bool]] = [
        ("query audit ON (in-process consumer, durable before the answer)", True, ("*",), False),
        (
            f"query audit ON + token scoped to {len(SCOPE)} of {TENANTS} tenants",
            True,
            SCOPE,
            False,
        ),
        ("query audit OFF", False, ("*",), False),
    ]
    if args.edge:
        modes = [
            (
                f"HTTPS + query audit ON + token scoped to {len(SCOPE)} of {TENANTS} tenants",
                True,
                SCOPE,
                True,
            )
        ]
    within = True
    for label, audit, tenants, tls in modes:
        rows = asyncio.run(measure(args.es_url, meta, args.iterations, audit, tenants, tls))
        print(f"{label}")
        print(f"{'query':<22}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'avg hits':>10}")
        for name, lat, hits in rows:
            print(
                f"{name:<22}{_pct(lat, 50):>9.1f}{_pct(lat, 95):>9.1f}{_pct(lat, 99):>9.1f}"
                f"{statistics.fmean(lat):>9.1f}{hits:>10}"
            )
            if args.edge and name not in UNFILTERED and _pct(lat, 95) >= EDGE_P95_MS:
                within = False
        print()
    if args.edge:
        print(
            f"filtered queries p95 < {EDGE_P95_MS:g} ms: {'yes' if within else 'NO'} "
            f"({meta['events']:,} events)"
        )
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
