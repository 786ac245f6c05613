"""The browser's verifier (static/verify.js) in Chromium against the project's vectors:
every transparency-dev Merkle inclusion vector (good and tampered), the RFC 8785 vectors
and the leaf hashes of stored documents that ``docs/hashing.md`` defines. The same files
hold the Python implementation to the same answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Console

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
MERKLE = REPO / "tests" / "data" / "merkle" / "inclusion"
HASHING = REPO / "tests" / "otel_audit" / "integrity" / "testdata" / "hashing"

_RUN_INCLUSION = """async (cases) => {
  const v = await import("/console/static/verify.js");
  const out = [];
  for (const c of cases) {
    let ok;
    try {
      const b = (s) => v.b64decode(s || "", "x");
      const path = (c.proof || []).map(b);
      await v.verifyInclusion(b(c.leafHash), c.leafIdx, c.treeSize, path, b(c.root));
      ok = true;
    } catch (e) {
      ok = false;
    }
    out.push([c.name, ok]);
  }
  return out;
}"""

_RUN_HASHING = """async (cases) => {
  const v = await import("/console/static/verify.js");
  const out = [];
  for (const c of cases) {
    try {
      const value = v.parseJsonStrict(c.input);
      const canonical = v.canonicalJson(c.leaf ? Object.fromEntries(
        Object.entries(value).filter(([k]) => k !== "integrity")) : value);
      const leaf = c.leaf ? await v.leafHashOfDocument(value)
        : await v.leafHashOfBytes(new TextEncoder().encode(canonical));
      out.push([c.name, canonical, v.hex(leaf), null]);
    } catch (e) {
      out.push([c.name, null, null, e.message]);
    }
  }
  return out;
}"""


def _open(page: Any, console: Console) -> None:
    page.goto(console.url("/console/login"))
    page.wait_for_selector("#login-form")


def test_merkle_inclusion_vectors(console: Console, page: Any) -> None:
    cases = []
    for path in sorted(MERKLE.rglob("*.json")):
        case = json.loads(path.read_text())
        case["name"] = str(path.relative_to(MERKLE))
        cases.append(case)
    assert len(cases) > 90
    _open(page, console)
    results = dict(page.evaluate(_RUN_INCLUSION, cases))
    wrong = [c["name"] for c in cases if results[c["name"]] == c["wantErr"]]
    assert not wrong, f"the browser verifier disagrees on {wrong}"


def test_canonical_json_and_leaf_hash_vectors(console: Console, page: Any) -> None:
    cases = []
    for v in json.loads((HASHING / "jcs.json").read_text())["vectors"]:
        cases.append({"name": v["name"], "input": v["input"], "leaf": False, "want": v})
    for v in json.loads((HASHING / "leaf.json").read_text())["vectors"]:
        cases.append({"name": v["name"], "input": v["document"], "leaf": True, "want": v})
    _open(page, console)
    results = {r[0]: r[1:] for r in page.evaluate(_RUN_HASHING, cases)}
    for case in cases:
        want = case["want"]
        canonical, leaf, error = results[case["name"]]
        if "error" in want:
            assert error is not None, f"{case['name']}: accepted, should fail ({want['error']})"
            continue
        assert error is None, f"{case['name']}: {error}"
        assert canonical == want["canonical"], case["name"]
        assert leaf == want["leaf_hash"], case["name"]
