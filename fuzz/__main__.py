"""Run the OTLP decoder fuzzers: ``python -m fuzz [--runs N] [--targets ...] [--json]``.

Each target (see :mod:`fuzz.oracle`) runs in its own process under atheris (libFuzzer),
starting from the committed seeds in ``fuzz/corpus/TARGET`` and the corpus earlier runs
grew in ``OUT/corpus/TARGET``. ``--runs`` cases are shared among the targets (the
native/Python differential ``logs_pb`` gets two shares). At the end it prints, per target,
the cases run, cases per second, coverage (libFuzzer's covered edges ``cov`` and features
``ft``) and findings, writes the same to ``OUT/summary.json`` and exits 1 when anything
was found (an oracle finding, a crash, a per-input timeout or running out of memory).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from otel_audit.exits import Exit

HERE = Path(__file__).resolve().parent
SEEDS = HERE / "corpus"
WEIGHTS = {"logs_pb": 2, "traces_pb": 1, "logs_json": 1, "traces_json": 1}
JSON_DICT = HERE / "otlp_json.dict"
PB_DICT = HERE / "otlp_pb.dict"
_LAST_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)", re.M)
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
_ARTIFACT = re.compile(r"^(crash|timeout|oom|leak|slow-unit)-")


def _share(runs: int, targets: list[str]) -> dict[str, int]:
    total = sum(WEIGHTS[t] for t in targets)
    shares = {t: runs * WEIGHTS[t] // total for t in targets}
    shares[targets[0]] += runs - sum(shares.values())
    return shares


def run_target(
    target: str, runs: int, out: Path, timeout_s: int, max_time_s: int, max_len: int
) -> dict[str, Any]:
    """Fuzz one target for ``runs`` cases (or ``max_time_s``); its line of the summary."""
    corpus = out / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    findings = out / "findings"
    findings.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in findings.iterdir()}
    command = [
        sys.executable,
        "-m",
        "fuzz.harness",
        target,
        "--findings",
        str(findings),
        "--stats",
        str(out / f"{target}.stats.json"),
        str(corpus),
        str(SEEDS / target),
        f"-runs={runs}",
        f"-timeout={timeout_s}",
        f"-max_total_time={max_time_s}",
        f"-max_len={max_len}",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={findings}/{target}-",
        f"-dict={JSON_DICT if target.endswith('_json') else PB_DICT}",
        "-print_final_stats=1",
    ]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    started = time.monotonic()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    (out / f"{target}.log").write_text(proc.stderr + proc.stdout)
    stats = {k: int(v) for k, v in _STAT.findall(proc.stderr)}
    loop = _loop_rate(out / f"{target}.stats.json")
    status = _LAST_STATUS.findall(proc.stderr)
    cov, ft, corp = (int(v) for v in status[-1][1:]) if status else (0, 0, 0)
    cases = stats.get("number_of_executed_units", int(status[-1][0]) if status else 0)
    new = sorted(p.name for p in findings.iterdir() if p.name not in before)
    found: list[dict[str, Any]] = []
    for name in new:
        if name.endswith(".json"):
            found.append(json.loads((findings / name).read_text()))
        elif _ARTIFACT.match(name.removeprefix(f"{target}-")):
            kind = name.removeprefix(f"{target}-").split("-", 1)[0]
            found.append({"target": target, "signature": kind, "input": name, "detail": ""})
    if proc.returncode != 0 and not any(
        f["signature"] in ("crash", "timeout", "oom") for f in found
    ):
        tail = proc.stderr.strip().splitlines()[-5:]
        found.append(
            {
                "target": target,
                "signature": f"exit-{proc.returncode}",
                "input": "",
                "detail": " | ".join(tail),
            }
        )
    return {
        "target": target,
        "cases": cases,
        "seconds": round(elapsed, 1),
        "cases_per_s": loop,
        "wall_cases_per_s": round(cases / elapsed, 1) if elapsed else 0.0,
        "cov": cov,
        "ft": ft,
        "corpus": corp,
        "new_units": stats.get("new_units_added", 0),
        "peak_rss_mb": stats.get("peak_rss_mb", 0),
        "findings": found,
    }


def _loop_rate(path: Path) -> float:
    """Cases per second while fuzzing (start-up excluded), from the harness's stats file."""
    try:
        stats = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0.0
    path.unlink()
    return round(stats["cases"] / stats["seconds"], 1) if stats["seconds"] > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000, help="cases, all targets together")
    parser.add_argument("--targets", nargs="+", choices=sorted(WEIGHTS), default=list(WEIGHTS))
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--timeout", type=int, default=10, help="per-input limit, seconds")
    parser.add_argument("--max-time", type=int, default=1800, help="per-target limit, seconds")
    parser.add_argument("--max-len", type=int, default=16384, help="largest input, bytes")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if args.runs < len(args.targets):
        parser.error("--runs must give each target at least one case")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for target, runs in _share(args.runs, args.targets).items():
        row = run_target(target, runs, args.out, args.timeout, args.max_time, args.max_len)
        rows.append(row)
        if not args.json:
            print(f"fuzz: {target}: {row['cases']} cases in {row['seconds']} s", flush=True)
    total_cases = sum(r["cases"] for r in rows)
    total_s = sum(r["seconds"] for r in rows)
    findings = [f for r in rows for f in r["findings"]]
    summary = {
        "targets": rows,
        "cases": total_cases,
        "seconds": round(total_s, 1),
        "wall_cases_per_s": round(total_cases / total_s, 1) if total_s else 0.0,
        "findings": findings,
        "findings_dir": str(args.out / "findings"),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        _print_table(summary)
    return Exit.FINDINGS if findings else Exit.OK


def _print_table(summary: dict[str, Any]) -> None:
    print(
        f"{'target':<12} {'cases':>9} {'s':>7} {'cases/s':>8} {'cov':>6} {'ft':>7}"
        f" {'corpus':>7} {'findings':>8}"
    )
    for r in summary["targets"]:
        print(
            f"{r['target']:<12} {r['cases']:>9} {r['seconds']:>7} {r['cases_per_s']:>8}"
            f" {r['cov']:>6} {r['ft']:>7} {r['corpus']:>7} {len(r['findings']):>8}"
        )
    print(
        f"{'total':<12} {summary['cases']:>9} {summary['seconds']:>7}"
        f" {'':>8} {'':>6} {'':>7} {'':>7} {len(summary['findings']):>8}"
    )
    for f in summary["findings"]:
        print(f"finding: {f['target']}: {f['signature']}: {f['detail'][:200]} ({f['input']})")
    print(
        f"(s: wall time with start-up; cases/s: while fuzzing; {summary['wall_cases_per_s']}"
        " cases/s over the wall time. cov, ft: libFuzzer's covered edges and features of the"
        f" instrumented Python code. Findings in {summary['findings_dir']})"
    )


if __name__ == "__main__":
    sys.exit(main())
