"""The sealer's journal and its pending entries, held as columns."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import orjson
import pytest

from otel_audit.integrity import encode_hash
from receiver.sealing.state import QUARANTINE_FILENAME, Entries, Journal, Pending


def _entries(*ids: str) -> Entries:
    return Entries(
        [f"audit-events-2026.11.{len(i):02d}" for i in ids],
        list(ids),
        [hashlib.sha256(i.encode()).digest() for i in ids],
        [f"2026-11-28T00:00:0{n % 10}.000000000Z" for n in range(len(ids))],
    )


def _rows(entries: Entries) -> list[tuple[str, str, bytes, str]]:
    return list(
        zip(
            entries.index_names,
            entries.event_ids,
            entries.leaf_hashes,
            entries.timestamps,
            strict=True,
        )
    )


def test_journal_round_trip_gives_each_entry_and_the_offset_past_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal-00000000.log")
    first, second = _entries("a", "bb"), _entries("ccc")
    ends = journal.append(first) + journal.append(second)
    data = journal.path.read_bytes()
    assert ends[-1] == len(data) == journal.size
    assert [data[e - 1 : e] for e in ends] == [b"\n"] * 3

    read, read_ends = journal.read_from(0)
    assert _rows(read) == _rows(first) + _rows(second)
    assert read_ends == ends
    # Reading from an entry's end starts at the next entry.
    later, later_ends = journal.read_from(ends[0])
    assert later.event_ids == ["bb", "ccc"] and later_ends == ends[1:]
    journal.close()


def test_journal_lines_are_the_documented_json_arrays(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.log")
    entries = _entries("id-1")
    journal.append(entries)
    line = journal.path.read_bytes()
    assert (
        line
        == orjson.dumps(
            [
                entries.index_names[0],
                "id-1",
                encode_hash(entries.leaf_hashes[0]),
                entries.timestamps[0],
            ]
        )
        + b"\n"
    )
    journal.close()


def test_a_torn_last_line_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    journal = Journal(path)
    ends = journal.append(_entries("a", "b"))
    journal.close()
    with path.open("ab") as f:
        f.write(b'["audit-events-2026.11.28","c","AAAA')  # a crash mid-append
    journal = Journal(path)
    read, read_ends = journal.read_from(0)
    assert read.event_ids == ["a", "b"] and read_ends == ends
    assert path.stat().st_size == ends[-1] == journal.size
    journal.close()


def test_a_corrupt_middle_line_is_set_aside_and_every_later_entry_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "j.log"
    journal = Journal(path)
    ends = journal.append(_entries("a", "b", "c", "d"))
    journal.close()
    data = bytearray(path.read_bytes())
    # Damage the second line (a bad disk block): its JSON no longer parses.
    data[ends[0] + 2 : ends[0] + 6] = b"\x00\xff{]"
    path.write_bytes(bytes(data))

    journal = Journal(path)
    with caplog.at_level(logging.ERROR, logger="otel_audit.receiver.sealer"):
        read, read_ends = journal.read_from(0)
    assert read.event_ids == ["a", "c", "d"]
    assert read_ends == [ends[0], ends[2], ends[3]]
    assert path.stat().st_size == ends[-1]  # nothing cut
    assert f"corrupt entry at offset {ends[0]}" in caplog.text
    (aside,) = (orjson.loads(x) for x in (tmp_path / QUARANTINE_FILENAME).read_bytes().splitlines())
    assert aside["journal"] == "j.log" and aside["offset"] == ends[0]
    assert '"b"' in aside["line"]
    journal.close()


def test_a_line_with_a_wrong_field_is_set_aside_too(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    journal = Journal(path)
    journal.append(_entries("a"))
    journal.close()
    with path.open("ab") as f:
        f.write(orjson.dumps(["i", 7, encode_hash(b"\0" * 32), "t"]) + b"\n")
    journal = Journal(path)
    journal.append(_entries("z"))
    read, _ = journal.read_from(0)
    assert read.event_ids == ["a", "z"]
    assert b'\\"i\\",7' in (tmp_path / QUARANTINE_FILENAME).read_bytes()
    journal.close()


def test_unique_drops_seen_ids_and_repeats_and_keeps_order() -> None:
    entries = _entries("a", "b", "a", "c", "d")
    assert entries.unique(set()).event_ids == ["a", "b", "c", "d"]
    kept = entries.unique({"c"})
    assert kept.event_ids == ["a", "b", "d"]
    assert _rows(kept) == [_rows(entries)[i] for i in (0, 1, 4)]
    clean = _entries("x", "y")
    assert clean.unique({"a"}) is clean
    assert clean.new_positions(set()) is None
    assert entries.new_positions({"b"}) == [0, 3, 4]


def test_pending_keeps_ends_ids_and_columns_aligned() -> None:
    pending = Pending()
    pending.add(_entries("a", "b", "c"), [10, 20, 30])
    pending.add(_entries("d", "e"), [40, 50])
    assert len(pending) == 5 and pending.ids == {"a", "b", "c", "d", "e"}

    pending.drop(2)
    assert pending.entries.event_ids == ["c", "d", "e"]
    assert pending.ends == [30, 40, 50] and pending.ids == {"c", "d", "e"}
    assert pending.entries.head(2).event_ids == ["c", "d"]

    # After a restart: of the first two, "c" turns out sealed already; "e" is beyond them
    # and stays even though it is named too.
    assert pending.discard_head({"c", "e"}, 2) == 1
    assert pending.entries.event_ids == ["d", "e"]
    assert pending.ends == [40, 50] and pending.ids == {"d", "e"}
    assert _rows(pending.entries) == [_rows(_entries("d", "e"))[i] for i in (0, 1)]
    assert pending.discard_head(set(), 2) == 2 and len(pending) == 2


def test_the_development_key_warning_is_logged_once_per_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from receiver.sealing.config import IntegrityConfig
    from receiver.sealing.sealer import load_signing_key

    config = IntegrityConfig(state_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="otel_audit.receiver.sealer"):
        keys = {load_signing_key(config, environ={}).public_key().public_bytes_raw()}
        keys |= {load_signing_key(config, environ={}).public_key().public_bytes_raw()}
    warnings = [r for r in caplog.records if "DEVELOPMENT SIGNING KEY" in r.getMessage()]
    assert len(keys) == 1, "the generated key is kept and loaded again"
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_writers_syncing_together_share_one_fsync_and_close_syncs_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from receiver.sealing import state as sealing_state

    fsyncs: list[int] = []
    real = os.fsync
    monkeypatch.setattr(sealing_state.os, "fsync", lambda fd: (fsyncs.append(fd), real(fd)))
    log = sealing_state.IntentLog(tmp_path / "intent.log")
    first = log.write(_entries(*_ids(0, 3)))
    second = log.write(_entries(*_ids(3, 3)))
    assert log.unsynced and fsyncs == []
    log.sync_to(first[-1])  # covers the second write too: it was written before
    log.sync_to(second[-1])
    assert len(fsyncs) == 1 and not log.unsynced
    log.append(_entries(*_ids(6, 2)))  # an intent log syncs each append
    assert len(fsyncs) == 2
    journal = Journal(tmp_path / "journal.log")
    end = journal.append(_entries(*_ids(0, 2)))[-1]
    assert journal.unsynced and len(fsyncs) == 2, "journal appends are not synced one by one"
    journal.close()
    assert not journal.unsynced and len(fsyncs) == 3
    journal.sync_to(end)  # closed, nothing left to sync: no error
    log.close()
    assert len(fsyncs) == 3, "nothing was left unsynced in the intent log"


def _ids(start: int, n: int) -> list[str]:
    return [f"e{k}" for k in range(start, start + n)]
