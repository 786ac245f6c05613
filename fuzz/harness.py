"""The atheris harness: ``python -m fuzz.harness TARGET --findings DIR [libFuzzer args]``.

Runs :mod:`fuzz.oracle`'s check for ``TARGET`` on every input libFuzzer generates, with
the receiver's Python code instrumented for coverage. An input that breaks a rule of the
oracle is a finding: the first input of each kind (target and signature) is written to
the findings directory with a ``.json`` description beside it, and fuzzing goes on. A
crash of the process (the native extension) or an input over the per-input time limit
is written by libFuzzer itself (``-artifact_prefix``), and ends the run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["receiver", "otel_audit", "fuzz.oracle"]):
    from fuzz import oracle

from fuzz.mutators import MUTATORS


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m fuzz.harness")
    parser.add_argument("target", choices=sorted(oracle.TARGETS))
    parser.add_argument("--findings", type=Path, required=True)
    parser.add_argument("--stats", type=Path, help="where to keep the case count and times")
    args, libfuzzer_args = parser.parse_known_args(argv[1:])
    if args.target == "logs_pb" and not oracle.native_enabled():
        sys.exit("fuzz: logs_pb compares the native decoder with Python: build native/ first")
    findings: Path = args.findings
    findings.mkdir(parents=True, exist_ok=True)
    check = oracle.TARGETS[args.target]
    seen: set[str] = set()
    # libFuzzer rounds its own rate to whole seconds since start-up (imports included): the
    # harness keeps the cases and the time of the first and latest one, every 256 cases.
    count = 0
    first = 0.0

    def one_input(data: bytes) -> None:
        nonlocal count, first
        if count == 0:
            first = time.monotonic()
        count += 1
        if args.stats is not None and count % 256 == 0:
            elapsed = time.monotonic() - first
            args.stats.write_text(json.dumps({"cases": count, "seconds": elapsed}))
        try:
            check(data)
        except oracle.Finding as finding:
            if finding.signature in seen:
                return
            seen.add(finding.signature)
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", finding.signature)[:60]
            stem = f"{finding.target}-{name}-{hashlib.sha1(data).hexdigest()[:12]}"
            (findings / f"{stem}.bin").write_bytes(data)
            description = {
                "target": finding.target,
                "signature": finding.signature,
                "detail": finding.detail,
                "input": f"{stem}.bin",
            }
            (findings / f"{stem}.json").write_text(json.dumps(description, indent=1) + "\n")
            print(f"FINDING {finding}", file=sys.stderr, flush=True)

    mutator = MUTATORS.get(args.target)
    if mutator is None:
        atheris.Setup([argv[0], *libfuzzer_args], one_input)
    else:
        atheris.Setup([argv[0], *libfuzzer_args], one_input, custom_mutator=mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
