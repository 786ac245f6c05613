"""Run the benchmarks in sequence and print one combined report.

    python -m bench                       # every benchmark, full sizes
    python -m bench --quick               # smaller sizes
    python -m bench ingest receiver_cpu   # only these (short or module names)
    python -m bench --list

The report starts with the machine (cores, memory, CPU model) and, before each benchmark,
the load average: on a shared machine a busy neighbour changes every number. Each
benchmark prints its own table; the end has ratios between figures measured in this same
run (never against numbers from another day or machine), then the status of each
benchmark. A benchmark whose module does not exist is reported as missing.

Benchmarks that need Elasticsearch get the node at ``OTEL_AUDIT_ES_URL`` (default
http://127.0.0.1:9280, heap 1g), started here when nothing answers there and stopped at the
end when this run started it. The ingest benchmark deletes ``audit-*`` indices on that node.

Exit status: 0 when every selected benchmark ran, 1 when one failed, 2 when one that was
asked for by name is missing (missing ones in a default run are reported, not fatal).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.figures import kv_table

DEFAULT_ES_URL = "http://127.0.0.1:9280"
DEFAULT_HEAP = "1g"


@dataclass(slots=True)
class Outcome:
    """What one benchmark produced."""

    status: str = "ok"
    """ok, missing, failed."""
    table: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    load_before: str = ""
    detail: str = ""


Adapter = Callable[[ModuleType, bool], tuple[str, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Bench:
    """One benchmark module and how to run it at full and quick size."""

    name: str
    module: str
    what: str
    full_argv: tuple[str, ...]
    quick_argv: tuple[str, ...]
    needs_es: bool = False
    adapter: Adapter | None = None
    """Calls the module's ``run(...)`` for figures; ``main(argv)`` is the fallback."""


def _receiver_cpu(mod: ModuleType, quick: bool) -> tuple[str, dict[str, Any]]:
    requests = 40 if quick else 200
    null = mod.run(requests, 500, 4, "null_sink", rounds=1 if quick else 3)
    # The discard consumer is the baseline: servers and decoding only, no pipeline work.
    bare = mod.run(requests, 500, 4, "discard")
    # The same null sink with the protobuf library decoding and the Python write path: what
    # the native decoder (decoding and preparing writes) saves.
    python = mod.run(requests, 500, 4, "null_sink", "python", rounds=1 if quick else 3)
    figures = {
        "null_sink_us_per_event": null["receiver_cpu_us_per_event"],
        "null_sink_rounds_us_per_event": null.get("rounds_cpu_us_per_event"),
        "discard_us_per_event": bare["receiver_cpu_us_per_event"],
        "python_decoder_null_sink_us_per_event": python["receiver_cpu_us_per_event"],
        "native_to_python_decoder_cpu": round(
            null["receiver_cpu_us_per_event"] / python["receiver_cpu_us_per_event"], 3
        ),
        "null_sink_events_per_s": null["events_per_s"],
        "null_sink_p50_ms": null["latency_p50_ms"],
        "null_sink_p99_ms": null["latency_p99_ms"],
        "null_sink_peak_rss_mib": null["peak_rss_mib"],
        "target_us_per_event": null["target_us_per_event"],
        "within_target": null["within_target"],
        "events": null["events"],
    }
    return kv_table(figures), figures


def _edge(mod: ModuleType, quick: bool) -> tuple[str, dict[str, Any]]:
    figures = mod.run(40 if quick else 200, 500, 4, rounds=2 if quick else 3)
    return kv_table(figures), figures


def _pipeline_cpu(mod: ModuleType, quick: bool) -> tuple[str, dict[str, Any]]:
    figures = mod.run(8 if quick else 20, 500, 3 if quick else 5)
    return kv_table(figures), figures


def _integrity(mod: ModuleType, quick: bool) -> tuple[str, dict[str, Any]]:
    rows = mod.run(100_000 if quick else 1_000_000)
    width = max(len(name) for name, _, _ in rows)
    fmt = getattr(mod, "_fmt", lambda s: f"{s:.6g} s")
    lines = [f"{'measurement':<{width}}  {'CPU time':>11}  note"]
    lines += [f"{name:<{width}}  {fmt(seconds)}  {note}" for name, seconds, note in rows]
    return "\n".join(lines), {name: seconds for name, seconds, _ in rows}


def _ingest(mod: ModuleType, quick: bool) -> tuple[str, dict[str, Any]]:
    # Five interleaved rounds, best of each phase: one phase caught by a neighbour's burst
    # would otherwise decide the ratios (two rounds left the seal ratio swinging between
    # 0.84 and 0.93 from one run to the next on a shared 2-core host, and three still saw
    # two of three ceiling rounds at 14k events/s against 22k for the third).
    result = mod.run(20_000 if quick else 100_000, rounds=1 if quick else 5)
    figures: dict[str, Any] = {"ratios": result["ratios"]}
    for phase in result["phases"]:
        figures[phase["phase"]] = phase
    return mod.format_report(result), figures


def _console(mod: ModuleType, quick: bool) -> tuple[str, dict[str, Any]]:
    figures = mod.run(100_000 if quick else 1_000_000, 30 if quick else 200)
    flat = {k: v for k, v in figures.items() if not isinstance(v, dict)} | {
        f"{k} p95_ms": v["p95_ms"] for k, v in figures.items() if isinstance(v, dict)
    }
    return mod.table(figures), flat


def _sdk_helpers(mod: ModuleType, quick: bool) -> tuple[str, dict[str, Any]]:
    figures = mod.run(quick)
    return kv_table(figures), figures


BENCHES: tuple[Bench, ...] = (
    Bench(
        "pipeline_cpu",
        "bench.pipeline_cpu",
        "in-process CPU per event of each receiver stage",
        (),
        ("--requests", "8", "--rounds", "3"),
        adapter=_pipeline_cpu,
    ),
    Bench(
        "receiver_cpu",
        "bench.receiver_cpu",
        "receiver CPU per event over gRPC, null sink",
        (),
        ("--requests", "40"),
        adapter=_receiver_cpu,
    ),
    Bench(
        "edge",
        "bench.edge_bench",
        "receiver ingest with TLS, mTLS and a writer token vs plaintext",
        (),
        ("--requests", "40", "--rounds", "2"),
        adapter=_edge,
    ),
    Bench(
        "integrity",
        "bench.integrity_bench",
        "canonical JSON, leaf hashes, Merkle roots, signatures",
        (),
        ("--events", "100000"),
        adapter=_integrity,
    ),
    Bench(
        "ingest",
        "bench.ingest_bench",
        "ingest into Elasticsearch vs the raw _bulk ceiling, sealing on/off",
        (),
        ("--quick",),
        needs_es=True,
        adapter=_ingest,
    ),
    Bench(
        "query",
        "bench.query_bench",
        "query API latency on 1M events",
        (),
        ("--events", "100000", "--iterations", "50"),
        needs_es=True,
    ),
    Bench(
        "console",
        "bench.console_bench",
        "console pages (search, event + proof + trace, chain) on 1M sealed events",
        (),
        ("--quick",),
        needs_es=True,
        adapter=_console,
    ),
    Bench(
        "sdk_helpers",
        "bench.sdk_helpers",
        "Node.js and Go helpers' cost per event over their SDK's emit",
        (),
        ("--quick",),
        adapter=_sdk_helpers,
    ),
    Bench(
        "verify",
        "bench.verify_bench",
        "verify throughput on 1M events",
        (),
        ("--quick",),
        needs_es=True,
    ),
    Bench(
        "lifecycle",
        "bench.lifecycle_bench",
        "archive and restore throughput, archive size vs the index (1M events)",
        (),
        ("--quick",),
        needs_es=True,
    ),
    Bench(
        "cluster",
        "bench.cluster_bench",
        "3-node cluster: one and two receivers (sealing on) vs the raw _bulk ceiling",
        (),
        ("--quick",),
    ),
)


def _lookup(name: str) -> Bench | None:
    for bench in BENCHES:
        if name in (bench.name, bench.module, bench.module.split(".", 1)[1]):
            return bench
    return None


# -- the machine ----------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(_mem_total_gib(), 1),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


# -- running one benchmark ------------------------------------------------------------------


class _Tee(io.TextIOBase):
    """Writes go to the real stdout and are kept for the combined report."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self.kept = io.StringIO()

    def write(self, text: str) -> int:
        self._out.write(text)
        self.kept.write(text)
        return len(text)

    def flush(self) -> None:
        self._out.flush()


def _has_run(mod: ModuleType) -> bool:
    return callable(getattr(mod, "run", None))


def run_one(bench: Bench, quick: bool) -> Outcome:
    """Import the module (only now) and run it; never raises for the benchmark's failure."""
    outcome = Outcome(load_before=load_average())
    try:
        mod = importlib.import_module(bench.module)
    except ModuleNotFoundError as exc:
        if exc.name != bench.module:
            outcome.status, outcome.detail = "failed", f"import failed: {exc}"
        else:
            outcome.status, outcome.detail = "missing", f"{bench.module} does not exist yet"
        return outcome
    except Exception as exc:
        outcome.status, outcome.detail = "failed", f"import failed: {exc!r}"
        return outcome
    began = time.monotonic()
    tee = _Tee(sys.stdout)
    try:
        with contextlib.redirect_stdout(tee):
            if bench.adapter is not None and _has_run(mod):
                outcome.table, outcome.figures = bench.adapter(mod, quick)
                print(outcome.table)
            else:
                argv = list(bench.quick_argv if quick else bench.full_argv)
                code = _call_main(mod, argv)
                outcome.table = tee.kept.getvalue().rstrip()
                if code:
                    outcome.status, outcome.detail = "failed", f"main() returned {code}"
    except (Exception, SystemExit) as exc:
        outcome.status = "failed"
        outcome.detail = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    outcome.seconds = time.monotonic() - began
    return outcome


def _call_main(mod: ModuleType, argv: list[str]) -> int:
    main = getattr(mod, "main", None)
    if not callable(main):
        raise RuntimeError(f"{mod.__name__} has no main(argv)")
    if not inspect.signature(main).parameters:
        saved = sys.argv
        sys.argv = [mod.__name__, *argv]
        try:
            return int(main() or 0)
        finally:
            sys.argv = saved
    return int(main(argv) or 0)


@contextlib.contextmanager
def _elasticsearch_for(selected: list[Bench]) -> Iterator[str | None]:
    """A node for the benchmarks that need one; stopped at the end if started here."""
    if not any(b.needs_es for b in selected):
        yield None
        return
    from indexer.local_es import LocalElasticsearch

    url = os.environ.get("OTEL_AUDIT_ES_URL") or DEFAULT_ES_URL
    os.environ["OTEL_AUDIT_ES_URL"] = url
    heap = os.environ.get("OTEL_AUDIT_LOCAL_ES_HEAP", DEFAULT_HEAP)
    node = LocalElasticsearch(url=url, heap=heap)
    started = node.ensure_started()
    try:
        yield url
    finally:
        if started:
            node.stop()


# -- the combined report --------------------------------------------------------------------


def cross_ratios(outcomes: dict[str, Outcome]) -> list[tuple[str, str]]:
    """Ratios between figures of this run; each names its baseline."""
    out: list[tuple[str, str]] = []

    def figures(name: str) -> dict[str, Any]:
        o = outcomes.get(name)
        return o.figures if o is not None and o.status == "ok" else {}

    rcv, pipe, ing = figures("receiver_cpu"), figures("pipeline_cpu"), figures("ingest")
    if rcv:
        null_us, bare_us = rcv["null_sink_us_per_event"], rcv["discard_us_per_event"]
        out.append(
            (
                "receiver CPU/event (null sink) vs target",
                f"{null_us} / {rcv['target_us_per_event']} us = "
                f"{null_us / rcv['target_us_per_event']:.2f}",
            )
        )
        if null_us:
            out.append(
                (
                    "servers + decode share of it (discard consumer baseline)",
                    f"{bare_us} / {null_us} us = {bare_us / null_us:.2f}",
                )
            )
    if rcv and pipe.get("total_us"):
        out.append(
            (
                "receiver over gRPC vs in-process pipeline (pipeline_cpu)",
                f"{rcv['null_sink_us_per_event']} / {pipe['total_us']} us = "
                f"{rcv['null_sink_us_per_event'] / pipe['total_us']:.2f}x",
            )
        )
    if ing:
        for key, value in ing["ratios"].items():
            out.append((f"ingest: {key}", str(value)))
        null = ing.get("null sink", {}).get("events_per_s")
        end = ing.get("ingest", {}).get("events_per_s")
        if null and end:
            out.append(("ingest events/s vs null-sink events/s", f"{end / null:.3f}"))
    sdk = figures("sdk_helpers")
    for lang in ("node", "go") if sdk else ():
        out.append(
            (
                f"{lang} helper emit vs its SDK's emit",
                f"{sdk[f'{lang}_helper_emit_us']} / {sdk[f'{lang}_sdk_emit_us']} us = "
                f"{sdk[f'{lang}_ratio']}x; cost {sdk[f'{lang}_helper_cost_us']} us "
                f"(target {sdk['target_cost_us']})",
            )
        )
    return out


def _section(title: str) -> str:
    return f"\n=== {title} " + "=" * max(3, 76 - len(title))


def main(argv: list[str] | None = None) -> int:
    """Command line: select, run, report."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "benchmarks", nargs="*", metavar="NAME", help="which to run (default: all present)"
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for b in BENCHES:
            print(f"{b.name:<14} {b.module:<24} {b.what}")
        return 0
    selected: list[Bench] = []
    for name in args.benchmarks:
        bench = _lookup(name)
        if bench is None:
            known = ", ".join(b.name for b in BENCHES)
            parser.error(f"unknown benchmark {name!r} (known: {known})")
        if bench not in selected:
            selected.append(bench)
    explicit = bool(selected)
    selected = selected or list(BENCHES)

    info = machine()
    print(_section("machine"))
    print(
        f"nproc {info['nproc']}, RAM {info['ram_gib']} GiB, CPU {info['cpu_model']}, "
        f"Python {info['python']}, kernel {info['kernel']}"
    )
    print(f"load average at start: {load_average()}; sizes: {'quick' if args.quick else 'full'}")
    outcomes: dict[str, Outcome] = {}
    with _elasticsearch_for(selected) as es_url:
        if es_url:
            print(f"Elasticsearch: {es_url}")
        for bench in selected:
            print(_section(f"{bench.name}: {bench.what}"))
            print(f"load average before: {load_average()}", flush=True)
            outcome = run_one(bench, args.quick)
            outcomes[bench.name] = outcome
            if outcome.status != "ok":
                print(f"{outcome.status.upper()}: {outcome.detail}")
    print(_section("ratios (baselines measured in this run)"))
    ratios = cross_ratios(outcomes)
    width = max((len(k) for k, _ in ratios), default=0)
    for key, value in ratios or [("(none)", "no benchmark with figures ran")]:
        print(f"{key:<{width}}  {value}")
    print(_section("summary"))
    for name, o in outcomes.items():
        line = f"{name:<14} {o.status:<8} {o.seconds:7.1f} s  load before {o.load_before}"
        print(line + (f"  ({o.detail})" if o.detail else ""))
    if any(o.status == "failed" for o in outcomes.values()):
        return 1
    if explicit and any(o.status == "missing" for o in outcomes.values()):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
