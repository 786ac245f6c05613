"""The OTLP decoders' fuzz oracle (fuzz/oracle.py) on every input the fuzzers ever flagged,
on the seed corpus, and in a short fuzz run.

``fuzz/regressions/TARGET/`` holds the inputs that once broke a rule of the oracle (a
crash, the native and Python decoders disagreeing, an answer outside the OTLP spec's
codes); each must now pass. The short run drives the real harness (atheris, in a
subprocess) over all four targets for a few thousand cases and fails on any finding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz import oracle

ROOT = Path(__file__).resolve().parents[3]
FUZZ = ROOT / "fuzz"


def _inputs(folder: str) -> list[tuple[str, Path]]:
    return [
        (target, path)
        for target in sorted(oracle.TARGETS)
        for path in sorted((FUZZ / folder / target).glob("*"))
        if path.is_file()
    ]


REGRESSIONS = _inputs("regressions")
SEEDS = _inputs("corpus")


def test_every_target_has_seeds() -> None:
    assert {target for target, _ in SEEDS} == set(oracle.TARGETS)


@pytest.mark.parametrize(("target", "path"), REGRESSIONS, ids=[p.name for _, p in REGRESSIONS])
def test_regression(target: str, path: Path) -> None:
    oracle.check(target, path.read_bytes())


@pytest.mark.parametrize(("target", "path"), SEEDS, ids=[f"{t}-{p.name[:8]}" for t, p in SEEDS])
def test_seed(target: str, path: Path) -> None:
    oracle.check(target, path.read_bytes())


def test_whitespace_in_a_json_id_is_not_hex() -> None:
    # bytes.fromhex skips whitespace: the id was accepted and stored with its spaces.
    body = (FUZZ / "regressions" / "logs_json" / "hex-id-with-spaces").read_bytes()
    decoded = oracle.decode.decode_logs_json(body)
    assert decoded.records == []
    assert decoded.reasons == ["traceId is not hex"]


def test_an_exception_other_than_invalid_request_is_a_finding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # It would be answered UNAVAILABLE / 503, and the client would retry the body for ever.
    def broken(body: bytes) -> None:
        raise TypeError("unhashable")

    monkeypatch.setattr(oracle.decode, "decode_logs_json", broken)
    with pytest.raises(oracle.Finding, match="json-TypeError"):
        oracle.check("logs_json", b"{}")


def test_a_refused_body_is_not_a_finding() -> None:
    oracle.check("logs_json", b"[")
    oracle.check("logs_pb", b"\xff")


@pytest.mark.fuzz
@pytest.mark.skipif(not oracle.native_enabled(), reason="the differential needs native/ built")
def test_short_fuzz_run(tmp_path: Path) -> None:
    runs = 4000
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz", "--runs", str(runs), "--out", str(tmp_path), "--json"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["findings"] == [], summary["findings"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {row["target"] for row in summary["targets"]} == set(oracle.TARGETS)
    assert sum(row["cases"] for row in summary["targets"]) == runs
    assert all(row["cov"] > 0 for row in summary["targets"])
