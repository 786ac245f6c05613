"""Console page latency on a million sealed events: what each page asks the query API.

Run: ``.venv/bin/python -m bench.console_bench [--events 1000000] [--iterations 200]
[--quick] [--json]``

The data is ``bench.verify_bench``'s (the receiver's document builder, sealed into blocks
by the sealer's primitives, reused when already loaded). The query API runs in process
with the console, query audit ON and the receiver's in-process consumer, as inside
``otel-audit serve``: every request's ``audit_log.*`` event is durable before it answers.

A page's time is its requests as ``static/console.js`` makes them: the search page one
``/events`` search; the event page ``/events/{id}``, then its proof and trace together
(the page waits for the slower); the trace page ``/traces/{id}``; the chain page
``/chains``. Baseline measured in the same run: the bare ``/events/{id}`` read; and
``otel-audit prove`` (the same one-block proof on the CLI's sync client) beside the
console's proof. Target: every page p95 < 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
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

from bench.verify_bench import _client, _work_dir, load

TOKEN = "bench-console-token"
TARGET_MS = 300.0


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))]


def _sample(es: Any, n: int) -> list[dict[str, Any]]:
    hits = es.search(
        index="audit-events-*",
        size=n,
        source_includes=["event.id", "trace.id", "user.id"],
        query={"function_score": {"random_score": {"seed": 7, "field": "_seq_no"}}},
    )["hits"]["hits"]
    return [h["_source"] for h in hits]


async def _measure(
    es_url: str, work: Path, sample: list[dict[str, Any]], iterations: int
) -> dict[str, list[float]]:
    from indexer.query.api import start_query_api
    from indexer.query.auth import hash_token
    from indexer.query.config import TokenEntry
    from indexer.query.console import ConsoleConfig
    from receiver.config import load_config
    from receiver.ingest.consumer import build_consumer

    spool = tempfile.mkdtemp(prefix="console-bench-spool-")
    consumer = build_consumer(
        SimpleNamespace(es_url=es_url, spool_dir=spool, bulk_flush_interval_ms=1)
    )
    await consumer.start()
    config = load_config(
        None, env={"OTEL_AUDIT_ES_URL": es_url, "OTEL_AUDIT_QUERY_API_ENDPOINT": "127.0.0.1:0"}
    )
    query = config.sections["query"]
    from dataclasses import replace

    sections = dict(config.sections)
    sections["query"] = replace(
        query,
        tokens=(TokenEntry(subject="bench", sha256=hash_token(TOKEN), roles=("reader",)),),
    )
    sections["console"] = ConsoleConfig(public_keys=(str(work),))
    config = replace(config, sections=sections)
    runner = await start_query_api(config, consumer.consume_logs)
    api = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1"
    rng = random.Random(3)
    out: dict[str, list[float]] = {}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:

        async def get(path: str, params: Any = None) -> float:
            t0 = time.perf_counter()
            async with http.get(api + path, params=params) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{path}: {resp.status} {body[:300]!r}")
            return (time.perf_counter() - t0) * 1000

        async def event_page(doc: dict[str, Any]) -> float:
            eid = doc["event"]["id"]
            t0 = time.perf_counter()
            await get(f"/events/{eid}")
            parallel = [get(f"/events/{eid}/proof")]
            trace = doc.get("trace", {}).get("id")
            if trace:
                parallel.append(get(f"/traces/{trace}"))
            await asyncio.gather(*parallel)
            return (time.perf_counter() - t0) * 1000

        pages: dict[str, Any] = {
            "search page (newest 50)": lambda: get("/events", {"limit": "50"}),
            "search page (actor)": lambda: get(
                "/events", {"actor": rng.choice(sample)["user"]["id"], "limit": "50"}
            ),
            "event page (read + proof + trace)": lambda: event_page(rng.choice(sample)),
            "chain page": lambda: get("/chains"),
            "baseline: bare /events/{id}": lambda: get(
                f"/events/{rng.choice(sample)['event']['id']}"
            ),
            "console proof (one block)": lambda: get(
                f"/events/{rng.choice(sample)['event']['id']}/proof"
            ),
        }
        if any(d.get("trace", {}).get("id") for d in sample):
            traced = [d for d in sample if d.get("trace", {}).get("id")]
            pages["trace page"] = lambda: get(f"/traces/{rng.choice(traced)['trace']['id']}")
        for _ in range(10):  # warm caches and connections
            await get("/events", {"limit": "50"})
        for name, make in pages.items():
            out[name] = [await make() for _ in range(iterations)]
    await runner.cleanup()
    await consumer.shutdown(5.0)
    return out


def run(events: int, iterations: int, prove_iterations: int = 5) -> dict[str, Any]:
    """Load (or reuse) ``events`` sealed events, time every page; the figures."""
    from indexer.integrity.prove import prove

    work = _work_dir()
    es = _client_url()
    client = _client(es)
    load(client, events, work)
    sample = _sample(client, 500)
    rng = random.Random(5)
    full: list[float] = []
    for _ in range(prove_iterations):
        t0 = time.perf_counter()
        prove(client, rng.choice(sample)["event"]["id"])
        full.append((time.perf_counter() - t0) * 1000)
    client.close()
    lat = asyncio.run(_measure(es, work / "keys", sample, iterations))
    lat["otel-audit prove (CLI, sync client)"] = full
    figures: dict[str, Any] = {"events": events, "iterations": iterations}
    for name, values in lat.items():
        figures[name] = {
            "p50_ms": round(_pct(values, 50), 1),
            "p95_ms": round(_pct(values, 95), 1),
            "mean_ms": round(statistics.fmean(values), 1),
            "n": len(values),
        }
    pages = [n for n in lat if n.endswith("page") or "page (" in n]
    figures["pages_within_300ms_p95"] = all(figures[n]["p95_ms"] < TARGET_MS for n in pages)
    figures["event_page_to_bare_read_p95"] = round(
        figures["event page (read + proof + trace)"]["p95_ms"]
        / figures["baseline: bare /events/{id}"]["p95_ms"],
        2,
    )
    figures["cli_prove_to_console_proof_p50"] = round(
        figures["otel-audit prove (CLI, sync client)"]["p50_ms"]
        / figures["console proof (one block)"]["p50_ms"],
        1,
    )
    return figures


def _client_url() -> str:
    import os

    return os.environ.get("OTEL_AUDIT_ES_URL", "http://127.0.0.1:9200")


def table(figures: dict[str, Any]) -> str:
    """The figures as a text table."""
    lines = [f"{'request / page':<44}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}{'n':>6}"]
    for name, v in figures.items():
        if isinstance(v, dict):
            lines.append(
                f"{name:<44}{v['p50_ms']:>9.1f}{v['p95_ms']:>9.1f}{v['mean_ms']:>9.1f}{v['n']:>6}"
            )
    for name in (
        "pages_within_300ms_p95",
        "event_page_to_bare_read_p95",
        "cli_prove_to_console_proof_p50",
    ):
        lines.append(f"{name}: {figures[name]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.console_bench", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="100,000 events, 30 requests per row")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    events, iterations = (100_000, 30) if args.quick else (args.events, args.iterations)
    figures = run(events, iterations)
    if args.json:
        sys.stdout.write(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(table(figures))
    return 0 if figures["pages_within_300ms_p95"] else 1


if __name__ == "__main__":
    sys.exit(main())
