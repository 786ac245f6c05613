"""The Node.js and Go helpers' cost per event on top of their SDK's own emit.

Run: ``.venv/bin/python -m bench.sdk_helpers [--quick] [--json]`` (``make sdk`` first: it
installs the helpers' dependencies).

Each language's benchmark emits the same audit record through the same SDK logger (a
processor that drops records) with and without the helper, in alternating rounds timed in
CPU time of the process, and reports the medians: the SDK's emit alone is the baseline
measured in the same run, the helper's cost is the difference. Node.js:
``sdk/node/bench/emit.bench.js``; Go: ``BenchmarkHelperCost`` in ``sdk/go/bench_test.go``.
Target: at most 5 µs per event on top of the SDK's emit.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.figures import print_figures

SDK = Path(__file__).resolve().parents[1] / "sdk"
TARGET_US = 5.0
_TIMEOUT_S = 900


def _run(args: list[str], cwd: Path) -> str:
    if shutil.which(args[0]) is None:
        raise RuntimeError(f"{args[0]} is not on PATH (the helpers' benchmarks need it)")
    done = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} exited with {done.returncode} (did `make sdk` run?):\n"
            f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return done.stdout


def node(quick: bool) -> dict[str, Any]:
    """The Node.js helper: SDK emit, helper emit, cost and ratio (µs of CPU per event)."""
    out = _run(["node", "bench/emit.bench.js", *(["--quick"] if quick else [])], SDK / "node")
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return figures


def go(quick: bool) -> dict[str, Any]:
    """The Go helper, from BenchmarkHelperCost's reported metrics."""
    events = "30000x" if quick else "300000x"
    out = _run(
        ["go", "test", "-run", "^$", "-bench", "HelperCost", "-benchtime", events, "."],
        SDK / "go",
    )
    line = next(x for x in out.splitlines() if x.startswith("BenchmarkHelperCost"))
    metrics = {unit: float(value) for value, unit in re.findall(r"([\d.]+) (\S+/event)", line)}
    sdk_us, helper_us = metrics["sdk-us/event"], metrics["helper-us/event"]
    return {
        "language": "go",
        "events": int(events[:-1]),
        "sdk_emit_us": sdk_us,
        "helper_emit_us": helper_us,
        "helper_cost_us": round(helper_us - sdk_us, 3),
        "ratio": round(helper_us / sdk_us, 2),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Both languages' figures, flat, with the target and whether each is within it."""
    figures: dict[str, Any] = {}
    for result in (node(quick), go(quick)):
        lang = result["language"]
        for key in ("sdk_emit_us", "helper_emit_us", "helper_cost_us", "ratio", "events"):
            figures[f"{lang}_{key}"] = result[key]
        figures[f"{lang}_within_target"] = result["helper_cost_us"] <= TARGET_US
    figures["target_cost_us"] = TARGET_US
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer events")
    parser.add_argument("--json", action="store_true", help="one JSON line")
    args = parser.parse_args(argv)
    try:
        figures = run(args.quick)
    except RuntimeError as exc:
        print(f"sdk_helpers: {exc}", file=sys.stderr)
        return 3
    print_figures(figures, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
