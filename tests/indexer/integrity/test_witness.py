"""The witness as its own process: cosigns consistent growth, refuses split views.

Each test runs ``otel-audit witness serve`` as a child process and talks to it over HTTP,
as a receiver on another host would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer.integrity.witness import submit_checkpoint
from otel_audit.integrity import (
    Checkpoint,
    generate_private_key,
    make_checkpoint,
    sign_checkpoint,
    write_key_pair,
)
from otel_audit.integrity.checkpoint import checkpoint_note
from otel_audit.integrity.merkle import consistency_proof, leaf_hash, root_hash
from otel_audit.integrity.note import CosignatureVerifier, parse_vkey
from tests.support.child_process import stop_child
from tests.support.lifecycle_harness import free_port

ORIGIN = "audit.example/receiver-0"
LOG_KEY = generate_private_key()
LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(40)]
OTHER = [leaf_hash(b"x" + i.to_bytes(4, "big")) for i in range(40)]


class WitnessProcess:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        keys = write_key_pair(LOG_KEY, tmp / "log-keys", force=True)
        witness_keys = tmp / "witness-keys"
        if not witness_keys.exists():
            write_key_pair(generate_private_key(), witness_keys)
        self.args = [
            sys.executable, "-m", "otel_audit.cli", "witness", "serve",
            "--key", str(witness_keys / "signing-key.pem"),
            "--name", "witness.example/w1",
            "--log", f"{ORIGIN}={keys.public_key_path}",
            "--state", str(tmp / "witness-state.json"),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.verifier: CosignatureVerifier | None = None

    def start(self) -> None:
        self.log = (self.tmp / "witness.log").open("a")
        self.proc = subprocess.Popen(
            [*self.args, "--listen", f"127.0.0.1:{free_port()}"],
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        assert self.proc.stdout is not None
        first = json.loads(self.proc.stdout.readline())
        self.url = first["listening"]
        verifier = parse_vkey(first["vkey"])
        assert isinstance(verifier, CosignatureVerifier)
        self.verifier = verifier

    def stop(self) -> None:
        if self.proc is not None:
            stop_child(self.proc, 10.0)
            self.proc = None
        self.log.close()

    def log_lines(self) -> list[dict[str, object]]:
        text = (self.tmp / "witness.log").read_text()
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[WitnessProcess]:
    w = WitnessProcess(tmp_path)
    w.start()
    try:
        yield w
    finally:
        w.stop()


def _cp(leaves: list[bytes], size: int, sequence: int = 0) -> Checkpoint:
    cp = make_checkpoint(
        origin=ORIGIN,
        tree_size=size,
        root_hash=root_hash(leaves[:size]),
        sequence=sequence,
        previous_hash=bytes(32),
    )
    return sign_checkpoint(cp, LOG_KEY)


def _submit(w: WitnessProcess, cp: Checkpoint, old: int, proof: list[bytes]):  # type: ignore[no-untyped-def]
    assert w.verifier is not None
    return submit_checkpoint(
        w.url, checkpoint_note(cp, LOG_KEY.public_key()), old, proof, w.verifier
    )


def test_cosigns_consistent_growth_and_serves_the_latest(witness: WitnessProcess) -> None:
    first = _submit(witness, _cp(LEAVES, 4), 0, [])
    assert first.status == 200 and first.cosignatures
    cp = _cp(LEAVES, 11, 1)
    second = _submit(witness, cp, 4, consistency_proof(LEAVES, 4, 11))
    assert second.status == 200
    assert witness.verifier is not None
    assert witness.verifier.timestamp(cp.body().decode(), second.cosignatures[0]) is not None
    # A stale client learns the cosigned size from the 409 body, as tlog-witness says.
    stale = _submit(witness, _cp(LEAVES, 20, 2), 4, consistency_proof(LEAVES, 4, 20))
    assert (stale.status, stale.cosigned_size, stale.refusal) == (409, 11, "")


def test_refuses_a_different_root_at_the_cosigned_size(witness: WitnessProcess) -> None:
    assert _submit(witness, _cp(LEAVES, 8), 0, []).status == 200
    forked = _submit(witness, _cp(OTHER, 8, 1), 8, [])
    assert forked.status == 409
    assert forked.refusal.startswith("split-view: a different root")
    assert forked.cosigned_size == 8
    errors = [r for r in witness.log_lines() if r["level"] == "error"]
    assert errors and errors[-1]["msg"] == "split view refused"


def test_refuses_a_tree_that_does_not_extend_the_cosigned_one(
    witness: WitnessProcess, tmp_path: Path
) -> None:
    assert _submit(witness, _cp(LEAVES, 8), 0, []).status == 200
    # A signed tree of 20 leaves that rewrote leaf 3, with an honest proof for *its* history.
    rewritten = LEAVES[:3] + OTHER[3:8] + LEAVES[8:]
    refused = _submit(witness, _cp(rewritten, 20, 1), 8, consistency_proof(rewritten, 8, 20))
    assert refused.status == 409
    assert refused.refusal.startswith("split-view: the tree does not extend")
    # The refusal is durable: after a restart the fork is still refused, growth accepted.
    witness.stop()
    witness.start()
    again = _submit(witness, _cp(rewritten, 20, 1), 8, consistency_proof(rewritten, 8, 20))
    assert again.status == 409 and again.refusal
    good = _submit(witness, _cp(LEAVES, 20, 1), 8, consistency_proof(LEAVES, 8, 20))
    assert good.status == 200
    state = json.loads((tmp_path / "witness-state.json").read_text())
    assert state["logs"][ORIGIN]["size"] == 20


def test_refuses_unknown_origins_bad_signatures_and_malformed_requests(
    witness: WitnessProcess,
) -> None:
    stranger = generate_private_key()
    cp = make_checkpoint(
        origin="audit.example/stranger",
        tree_size=1,
        root_hash=LEAVES[0],
        sequence=0,
        previous_hash=bytes(32),
    )
    cp = sign_checkpoint(cp, stranger)
    assert witness.verifier is not None
    note = checkpoint_note(cp, stranger.public_key())
    assert submit_checkpoint(witness.url, note, 0, [], witness.verifier).status == 404
    # The right origin signed by another key: 403.
    forged = sign_checkpoint(_cp(LEAVES, 3), stranger)
    note = checkpoint_note(forged, stranger.public_key())
    assert submit_checkpoint(witness.url, note, 0, [], witness.verifier).status == 403
    assert _submit(witness, _cp(LEAVES, 3), 5, []).status == 400
    assert _submit(witness, _cp(LEAVES, 3), 0, [LEAVES[0]]).status == 422
    assert _submit(witness, _cp(LEAVES, 3), 0, []).status == 200
