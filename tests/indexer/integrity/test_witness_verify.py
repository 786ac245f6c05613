"""Witness cosignatures end to end: real sealer, real Elasticsearch, witness process, CLI.

``witness submit`` builds its consistency proofs from the block records in Elasticsearch;
``verify --witness-key`` fails while the newest checkpoint is not cosigned; ``consistency``
checks a proof offline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from otel_audit.integrity import generate_private_key, write_key_pair
from otel_audit.integrity.consistency import format_proof_lines, parse_proof_lines
from tests.indexer.integrity.test_witness import WitnessProcess
from tests.support.integrity_harness import ingest, run

pytestmark = pytest.mark.integration

KEY = generate_private_key()
# Its own chain id, so blocks of other chains in the same node do not count here.
CHAIN = f"witness-test-{uuid.uuid4().hex[:8]}"


def _cli(*args: str, es_url: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "otel_audit.cli", *args, "--es-url", es_url, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[WitnessProcess]:
    w = WitnessProcess(tmp_path / "witness")
    w.args[w.args.index("--log") + 1] = f"{CHAIN}={tmp_path / 'keys' / 'signing-key.pub.pem'}"
    write_key_pair(KEY, tmp_path / "keys")
    w.start()
    try:
        yield w
    finally:
        w.stop()


def test_submit_verify_and_consistency(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path, witness: WitnessProcess
) -> None:
    keys = str(tmp_path / "keys")
    cps = str(tmp_path / "checkpoints")
    run(ingest(es_url, tmp_path, KEY, [60, 40], chain_id=CHAIN))
    clean_es.indices.refresh(index="audit-*")
    verify = ("verify", "--public-key", keys, "--checkpoint-dir", cps, "--grace-s", "0",
              "--chain", CHAIN)  # fmt: skip
    assert witness.verifier is not None
    wkey = witness.verifier.vkey()

    # Not cosigned yet: the finding names the checkpoint.
    rc, out = _cli(*verify, "--witness-key", wkey, es_url=es_url)
    assert rc == 1
    (finding,) = out["witness"]["findings"]
    assert finding["chain_id"] == CHAIN and "0 valid witness cosignatures" in finding["message"]
    first_seq = finding["sequence"]

    submit = ("witness", "submit", "--witness", witness.url, "--witness-key", wkey,
              "--public-key", keys, "--checkpoint-dir", cps, "--chain", CHAIN)  # fmt: skip
    rc, out = _cli(*submit, es_url=es_url)
    assert rc == 0, out
    assert out["results"][0]["old_size"] == 0 and out["results"][0]["tree_size"] == 100
    rc, out = _cli(*verify, "--witness-key", wkey, es_url=es_url)
    assert rc == 0, out
    assert out["witness"] == {"ok": True, "findings": []}

    # A second witness key that never cosigned: required by default, optional with a threshold.
    other = tmp_path / "other-witness.vkey"
    from otel_audit.integrity.note import Signer

    other.write_text(Signer("w2.example", generate_private_key(), cosigner=True).verifier.vkey())
    rc, _ = _cli(*verify, "--witness-key", wkey, "--witness-key", str(other), es_url=es_url)
    assert rc == 1
    rc, _ = _cli(
        *verify, "--witness-key", wkey, "--witness-key", str(other), "--witness-threshold", "1",
        es_url=es_url,
    )  # fmt: skip
    assert rc == 0

    # The chain grows: the newest checkpoint is uncosigned until the next submission,
    # which proves consistency from size 100 with the block records after it.
    run(ingest(es_url, tmp_path, KEY, [30], start=100, chain_id=CHAIN))
    clean_es.indices.refresh(index="audit-*")
    rc, out = _cli(*verify, "--witness-key", wkey, es_url=es_url)
    assert rc == 1 and out["witness"]["findings"][0]["sequence"] > first_seq
    rc, out = _cli(*submit, es_url=es_url)
    assert rc == 0, out
    assert (out["results"][0]["old_size"], out["results"][0]["tree_size"]) == (100, 130)
    rc, out = _cli(*verify, "--witness-key", wkey, es_url=es_url)
    assert rc == 0, out

    # consistency OLD NEW: proof from Elasticsearch, then offline from the saved proof file.
    chain_dir = Path(cps) / CHAIN
    notes = sorted(chain_dir.glob("*.note"))
    old_note, new_note = notes[0], notes[-1]
    proof_file = tmp_path / "proof.txt"
    rc, out = _cli(
        "consistency", str(old_note), str(new_note), "--public-key", keys,
        "--write-proof", str(proof_file), es_url=es_url,
    )  # fmt: skip
    assert rc == 0 and out["ok"] and out["proof_hashes"] > 0, out
    rc, out = _cli(
        "consistency", str(old_note), str(new_note), "--public-key", keys,
        "--proof", str(proof_file), es_url="http://127.0.0.1:9",
    )  # fmt: skip
    assert rc == 0 and out["ok"], out
    proof = parse_proof_lines(proof_file.read_text())
    proof[0] = bytes(32)
    proof_file.write_text(format_proof_lines(proof))
    rc, out = _cli(
        "consistency", str(old_note), str(new_note), "--public-key", keys,
        "--proof", str(proof_file), es_url="http://127.0.0.1:9",
    )  # fmt: skip
    assert rc == 1 and not out["ok"] and "does not lead" in out["error"]

    # A note whose cosignature was cut off no longer satisfies verify.
    text = new_note.read_text().splitlines(keepends=True)
    new_note.write_text("".join(text[:-1]))
    rc, out = _cli(*verify, "--witness-key", wkey, es_url=es_url)
    assert rc == 1, out
