"""Run the OTLP decoder fuzzers: ``python -m fuzz [--runs N] [--native-runs N] [--json]``.

Each Python target (see :mod:`fuzz.oracle`) runs in its own process under atheris
(libFuzzer), starting from the committed seeds in ``fuzz/corpus/TARGET`` and the corpus
earlier runs grew in ``OUT/corpus/TARGET``; ``--runs`` cases are shared among them (the
native/Python differential ``logs_pb`` gets two shares). atheris sees the Python code's
coverage only, so with ``--native-runs`` the Rust decoder is first fuzzed on its own
(``fuzz/native``: libFuzzer on the extension's sources, built with coverage
instrumentation), and every input that reached new Rust code is then replayed through
the ``logs_pb`` differential, which starts from that corpus too.

At the end it prints, per target, the cases run, cases per second, coverage (libFuzzer's
covered edges ``cov`` and features ``ft``) and findings, writes the same to
``OUT/summary.json`` and exits 1 when anything was found (an oracle finding, a crash, a
per-input timeout or running out of memory).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from otel_audit.exits import Exit

HERE = Path(__file__).resolve().parent
SEEDS = HERE / "corpus"
NATIVE = HERE / "native"
NATIVE_TARGET = "otlp_rust"
WEIGHTS = {"logs_pb": 2, "traces_pb": 1, "logs_json": 1, "traces_json": 1}
JSON_DICT = HERE / "otlp_json.dict"
PB_DICT = HERE / "otlp_pb.dict"
# What cargo fuzz builds with: libFuzzer's inline counters, PC table and comparison hooks.
SANCOV_RUSTFLAGS = " ".join(
    [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg fuzzing",
    ]
)
_LAST_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)", re.M)
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
_ARTIFACT = re.compile(r"^(crash|timeout|oom|leak|slow-unit)-")


def _share(runs: int, targets: list[str]) -> dict[str, int]:
    total = sum(WEIGHTS[t] for t in targets)
    shares = {t: runs * WEIGHTS[t] // total for t in targets}
    shares[targets[0]] += runs - sum(shares.values())
    return shares


def _cargo() -> str:
    found = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not Path(found).exists():
        raise SystemExit("fuzz: --native-runs needs cargo (rustup.rs)")
    return found


def build_native() -> Path:
    """Build the Rust fuzz target with coverage instrumentation; its path."""
    cargo = _cargo()
    rustc = Path(cargo).with_name("rustc")
    host = subprocess.run(
        [str(rustc) if rustc.exists() else "rustc", "-vV"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    triple = re.search(r"^host: (\S+)", host, re.M)
    if triple is None:
        raise SystemExit("fuzz: rustc -vV names no host")
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR") or NATIVE / "target")
    if os.environ.get("CARGO_TARGET_DIR"):
        target_dir = target_dir / "fuzz-native"
    # --target keeps the instrumentation off build scripts, which libFuzzer does not link.
    command = [cargo, "build", "--release", "--target", triple[1], "--bin", "otlp_logs"]
    env = {
        **os.environ,
        "CARGO_TARGET_DIR": str(target_dir),
        "RUSTFLAGS": SANCOV_RUSTFLAGS,
        "PATH": f"{Path(cargo).parent}:{os.environ.get('PATH', '')}",
    }
    subprocess.run(command, cwd=NATIVE, env=env, check=True)
    return target_dir / triple[1] / "release" / "otlp_logs"


def _libfuzzer(
    target: str, command: list[str], out: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run one libFuzzer process; its line of the summary."""
    findings = out / "findings"
    before = {p.name for p in findings.iterdir()}
    started = time.monotonic()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    (out / f"{target}.log").write_text(proc.stderr + proc.stdout)
    stats = {k: int(v) for k, v in _STAT.findall(proc.stderr)}
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
    crashed = any(f["signature"] in ("crash", "timeout", "oom", "leak") for f in found)
    if proc.returncode != 0 and not crashed:
        tail = proc.stderr.strip().splitlines()[-5:]
        found.append(
            {
                "target": target,
                "signature": f"exit-{proc.returncode}",
                "input": "",
                "detail": " | ".join(tail),
            }
        )
    loop = _loop_rate(out / f"{target}.stats.json")
    return {
        "target": target,
        "cases": cases,
        "seconds": round(elapsed, 1),
        "cases_per_s": loop or float(stats.get("average_exec_per_sec", 0)),
        "wall_cases_per_s": round(cases / elapsed, 1) if elapsed else 0.0,
        "cov": cov,
        "ft": ft,
        "corpus": corp,
        "new_units": stats.get("new_units_added", 0),
        "peak_rss_mb": stats.get("peak_rss_mb", 0),
        "findings": found,
    }


def _common_args(target: str, runs: int, out: Path, args: argparse.Namespace) -> list[str]:
    return [
        f"-runs={runs}",
        f"-timeout={args.timeout}",
        f"-max_total_time={args.max_time}",
        f"-max_len={args.max_len}",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={out / 'findings'}/{target}-",
        f"-dict={JSON_DICT if target.endswith('_json') else PB_DICT}",
        "-print_final_stats=1",
    ]


def run_native(binary: Path, runs: int, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Fuzz the Rust decoder on its own; its corpus grows in ``OUT/corpus/otlp_rust``."""
    corpus = out / "corpus" / NATIVE_TARGET
    corpus.mkdir(parents=True, exist_ok=True)
    command = [str(binary), str(corpus), str(SEEDS / "logs_pb")]
    return _libfuzzer(NATIVE_TARGET, command + _common_args(NATIVE_TARGET, runs, out, args), out)


def run_target(target: str, runs: int, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Fuzz one Python target for ``runs`` cases (or ``--max-time``)."""
    corpus = out / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    dirs = [corpus, SEEDS / target]
    native_corpus = out / "corpus" / NATIVE_TARGET
    if target == "logs_pb" and native_corpus.is_dir():
        dirs.append(native_corpus)  # what reached new Rust code, through the differential
    command = [
        sys.executable,
        "-m",
        "fuzz.harness",
        target,
        "--findings",
        str(out / "findings"),
        "--stats",
        str(out / f"{target}.stats.json"),
        *(str(d) for d in dirs),
        *_common_args(target, runs, out, args),
    ]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    return _libfuzzer(target, command, out, env)


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
    parser.add_argument("--runs", type=int, default=100_000, help="cases, Python targets")
    parser.add_argument(
        "--native-runs", type=int, default=0, help="cases of the Rust decoder on its own first"
    )
    parser.add_argument("--targets", nargs="+", choices=sorted(WEIGHTS), default=list(WEIGHTS))
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--timeout", type=int, default=10, help="per-input limit, seconds")
    parser.add_argument("--max-time", type=int, default=1800, help="per-target limit, seconds")
    parser.add_argument("--max-len", type=int, default=16384, help="largest input, bytes")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if args.runs < len(args.targets):
        parser.error("--runs must give each target at least one case")
    out: Path = args.out
    (out / "findings").mkdir(parents=True, exist_ok=True)
    rows = []
    if args.native_runs > 0:
        binary = build_native()
        rows.append(run_native(binary, args.native_runs, out, args))
        if not args.json:
            print(f"fuzz: {NATIVE_TARGET}: {rows[-1]['cases']} cases", flush=True)
    for target, runs in _share(args.runs, args.targets).items():
        rows.append(run_target(target, runs, out, args))
        if not args.json:
            print(f"fuzz: {target}: {rows[-1]['cases']} cases", flush=True)
    total_cases = sum(r["cases"] for r in rows)
    total_s = sum(r["seconds"] for r in rows)
    findings = [f for r in rows for f in r["findings"]]
    summary = {
        "targets": rows,
        "cases": total_cases,
        "python_cases": sum(r["cases"] for r in rows if r["target"] != NATIVE_TARGET),
        "seconds": round(total_s, 1),
        "wall_cases_per_s": round(total_cases / total_s, 1) if total_s else 0.0,
        "findings": findings,
        "findings_dir": str(out / "findings"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
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
        "s: wall time with start-up; cases/s: while fuzzing"
        f" ({summary['wall_cases_per_s']} over the wall time); cov, ft: libFuzzer's covered"
        f" edges and features ({NATIVE_TARGET}: the Rust decoder's; the others: the"
        f" instrumented Python code's). Findings in {summary['findings_dir']}"
    )


if __name__ == "__main__":
    sys.exit(main())
