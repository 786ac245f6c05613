"""A shutdown that lands while the sealer rotates its journal."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from otel_audit.integrity import generate_private_key
from receiver.sealing.state import ChainState, Journal, StateDir
from tests.support.integrity_harness import ingest, kinds, run, run_verify

pytestmark = pytest.mark.integration

KEY = generate_private_key()


def _open_journals(state: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(state)) and "journal-" in target:
            out.append(target)
    return out


def test_a_shutdown_during_a_journal_rotation_waits_for_it(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sealing the last pending events starts a new journal generation in a worker thread.
    # A shutdown that cancels the seal loop meanwhile must let the rotation finish and close
    # the new journal: not close the old one under the thread's feet, nor leak the new one.
    rotate = StateDir.rotate_journal
    rotations: list[int] = []

    def slow_rotate(self: StateDir, state: ChainState, journal: Journal) -> Any:
        time.sleep(0.3)  # the shutdown arrives while this thread works
        rotations.append(state.journal_gen)
        return rotate(self, state, journal)

    monkeypatch.setattr(StateDir, "rotate_journal", slow_rotate)
    ids = run(ingest(es_url, tmp_path, KEY, [30], block_max_events=30))

    assert rotations == [0]
    assert _open_journals(tmp_path) == []
    state = StateDir(tmp_path).load_state("test-chain")
    assert state is not None and (state.journal_gen, state.journal_offset) == (1, 0)
    assert sorted(p.name for p in tmp_path.glob("journal-*.log")) == ["journal-00000001.log"]
    report = run_verify(clean_es, tmp_path, [KEY])
    assert kinds(report) == {} and report.events_checked == len(ids)
