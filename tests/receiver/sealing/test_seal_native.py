"""The native sealer helpers against their Python references.

``otel_audit_native.journal_lines`` must write the journal lines orjson writes, and
``merkle_extend`` must leave a compact range exactly where the hashlib loop leaves it,
including when it meets a leaf it does not take.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audit.integrity import CompactRange, ProofError, root_hash
from receiver import native
from receiver.sealing import state as seal_state
from receiver.sealing.state import ChainState, Entries, Journal

# Without the native extension the Python paths run alone and these tests skip; under
# CI=true the conftest turns each skip into a failure: CI always builds the extension.
pytestmark = pytest.mark.skipif(not native.ENABLED, reason=native.DESCRIPTION)

_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40
) | st.sampled_from(["audit-events-2026.11.28", "", '"', "\\", "\x00\x1f\x7f", "é😀\u2028"])
_digest = st.binary(min_size=32, max_size=32)


def test_the_native_helpers_are_in_use() -> None:
    assert seal_state._native_lines is not None
    assert seal_state._native_extend is not None
    # The sealer's frontier is handed the native extend; merkle.py itself stays pure Python.
    assert ChainState("c").compact_range()._fast_extend is seal_state._native_extend


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.tuples(_text, _text, _digest, _text), max_size=30),
    start=st.integers(0, 2**40),
)
def test_journal_lines_equal_orjsons(
    rows: list[tuple[str, str, bytes, str]], start: int, tmp_path_factory: Any
) -> None:
    entries = Entries(*(list(column) for column in zip(*rows, strict=True))) if rows else Entries()
    journal = Journal(tmp_path_factory.mktemp("j") / "j.log")
    journal.size = start
    native = journal._lines(entries)
    saved = seal_state._native_lines
    seal_state._native_lines = None
    try:
        reference = journal._lines(entries)
    finally:
        seal_state._native_lines = saved
        journal.close()
    assert native == reference


def test_a_journal_written_natively_reads_back(tmp_path: Path) -> None:
    ids = [f"id-{i}" for i in range(50)]
    entries = Entries(
        ["audit-events-2026.11.28"] * 50,
        ids,
        [hashlib.sha256(i.encode()).digest() for i in ids],
        ["2026-11-28T01:02:03.000000004Z"] * 50,
    )
    journal = Journal(tmp_path / "j.log")
    ends = journal.append(entries)
    read, read_ends = journal.read_from(0)
    assert read == entries and read_ends == ends
    journal.close()


def _python_extend(size: int, hashes: list[bytes], leaves: list[Any]) -> CompactRange:
    cr = CompactRange.from_state(size, hashes)
    with contextlib.suppress(ProofError):
        cr.extend(leaves)
    return cr


def _native_range(size: int, hashes: list[bytes]) -> CompactRange:
    return CompactRange.from_state(size, hashes, fast_extend=seal_state._native_extend)


@settings(max_examples=150, deadline=None)
@given(
    before=st.lists(_digest, max_size=70),
    leaves=st.lists(_digest, max_size=70),
)
def test_merkle_extend_equals_the_hashlib_loop(before: list[bytes], leaves: list[bytes]) -> None:
    start = _python_extend(0, [], before)
    size, hashes = start.state()
    native = _native_range(size, list(hashes))
    native.extend(leaves)
    assert native.state() == _python_extend(size, list(hashes), leaves).state()
    assert native.root() == root_hash(before + leaves)


@pytest.mark.parametrize("bad", [b"\x00" * 31, b"\x00" * 33, bytearray(32)])
def test_merkle_extend_hands_an_odd_leaf_to_python(bad: Any) -> None:
    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(5)]
    mixed = [*leaves[:3], bad, *leaves[3:]]
    native = _native_range(3, list(_python_extend(0, [], leaves[:3]).state()[1]))
    expected = _python_extend(3, list(native.state()[1]), mixed)
    if isinstance(bad, bytearray):
        native.extend(mixed)  # hashlib takes a bytearray: so does the range, via Python
        assert native.size == 3 + 6
    else:
        with pytest.raises(ProofError, match="leaf hash has"):
            native.extend(mixed)
        # The leaves before the bad one stay appended, as with the Python loop alone.
        assert native.size == 6
    assert native.state() == expected.state()


def test_merkle_extend_refuses_an_inconsistent_range() -> None:
    assert seal_state._native_extend is not None
    with pytest.raises(ValueError, match="compact range of size 3 has 2 hashes, got 1"):
        seal_state._native_extend(3, [b"\x00" * 32], [])
