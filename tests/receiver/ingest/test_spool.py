"""The spool on its own: framing, order, commit, recovery of torn tails, the size bound."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from receiver.errors import Unavailable
from receiver.ingest.spool import Spool, SpoolFull


def _open(path: Path, max_bytes: int = 1 << 20, **kw: int) -> Spool:
    spool = Spool(path, max_bytes, **kw)  # type: ignore[arg-type]
    spool.open()
    return spool


def _payloads(spool: Spool) -> list[bytes]:
    return [f.payload for f in spool.read()]


def test_frames_come_back_in_order_and_survive_reopen(tmp_path: Path) -> None:
    spool = _open(tmp_path, segment_max_bytes=64 * 1024)
    batches = [f"batch-{i}".encode() * (i + 1) * 500 for i in range(12)]
    for b in batches:
        spool.append(b)
    assert len(list(tmp_path.glob("*.seg"))) > 1, "expected several segments"
    assert _payloads(spool) == batches
    spool.close()

    again = _open(tmp_path, segment_max_bytes=64 * 1024)
    assert again.pending_frames == 12
    assert _payloads(again) == batches


def test_commit_is_durable_and_removes_consumed_segments(tmp_path: Path) -> None:
    spool = _open(tmp_path, segment_max_bytes=64 * 1024)
    batches = [bytes([i]) * 20_000 for i in range(10)]
    for b in batches:
        spool.append(b)
    first = spool.read(max_frames=6)
    assert [f.payload for f in first] == batches[:6]
    spool.commit(first)
    spool.close()

    again = _open(tmp_path, segment_max_bytes=64 * 1024)
    assert _payloads(again) == batches[6:]
    rest = again.read()  # cursor is at the end now
    assert rest == []
    again.rewind()
    again.commit(again.read())
    assert again.is_empty and again.used_bytes == 0
    assert list(tmp_path.glob("*.seg")) == []
    # Appending after a full drain starts a fresh segment, never a reused number.
    again.append(b"after")
    again.close()
    third = _open(tmp_path)
    assert _payloads(third) == [b"after"]


def test_rewind_replays_uncommitted_frames(tmp_path: Path) -> None:
    spool = _open(tmp_path)
    for i in range(3):
        spool.append(f"b{i}".encode())
    assert _payloads(spool) == [b"b0", b"b1", b"b2"]
    spool.rewind()
    assert _payloads(spool) == [b"b0", b"b1", b"b2"]


def test_torn_tail_is_cut_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = _open(tmp_path)
    spool.append(b"one")
    spool.append(b"two" * 100)
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    data = segment.read_bytes()
    segment.write_bytes(data[:-50])  # a crash in the middle of the second append

    with caplog.at_level(logging.WARNING, logger="receiver.ingest.spool"):
        spool = Spool(tmp_path, 1 << 20)
        report = spool.open()
    assert report.frames == 1
    assert report.truncated_bytes > 0
    assert "torn or corrupt tail" in caplog.text
    assert _payloads(spool) == [b"one"]
    assert (tmp_path / (segment.name + ".corrupt")).stat().st_size == report.truncated_bytes
    # Appends continue behind the last good frame.
    spool.append(b"three")
    spool.close()
    assert _payloads(_open(tmp_path)) == [b"one", b"three"]


def test_corrupted_bytes_fail_the_checksum(tmp_path: Path) -> None:
    spool = _open(tmp_path)
    spool.append(b"good")
    spool.append(b"will be flipped")
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF
    segment.write_bytes(bytes(data))
    spool = Spool(tmp_path, 1 << 20)
    report = spool.open()
    assert report.frames == 1 and report.truncated_bytes == 12 + len(b"will be flipped")
    assert _payloads(spool) == [b"good"]


def test_a_corrupt_middle_frame_is_set_aside_and_later_frames_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = _open(tmp_path)
    for payload in (b"one", b"two" * 50, b"three", b"four"):
        spool.append(payload)
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    second = 12 + len(b"one")
    data[second + 20] ^= 0xFF  # a damaged byte inside the second frame's payload
    segment.write_bytes(bytes(data))

    with caplog.at_level(logging.ERROR, logger="receiver.ingest.spool"):
        spool = Spool(tmp_path, 1 << 20)
        report = spool.open()
    assert report.frames == 3
    assert report.truncated_bytes == 12 + 150
    assert f"corrupt bytes at offset {second}" in caplog.text
    assert _payloads(spool) == [b"one", b"three", b"four"]
    corrupt = tmp_path / (segment.name + ".corrupt")
    assert corrupt.read_bytes() == bytes(data[second : second + 12 + 150])
    # Appends continue behind the kept frames, and a reopen finds the same.
    spool.append(b"five")
    spool.close()
    assert _payloads(_open(tmp_path)) == [b"one", b"three", b"four", b"five"]


def test_full_spool_raises_unavailable_with_retry_after(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 4096, retry_after_s=7.0)
    spool.open()
    spool.append(b"x" * 3000)
    with pytest.raises(SpoolFull) as info:
        spool.append(b"y" * 2000)
    assert isinstance(info.value, Unavailable)
    assert info.value.retry_after_s == 7.0
    assert "spool is full" in str(info.value)
    # Committing frees the room again.
    spool.commit(spool.read())
    spool.append(b"y" * 2000)


def test_one_owner_per_directory(tmp_path: Path) -> None:
    _open(tmp_path)
    with pytest.raises(RuntimeError, match="in use by another process"):
        _open(tmp_path)


def test_commit_survives_a_crash_before_segment_delete(tmp_path: Path) -> None:
    spool = _open(tmp_path, segment_max_bytes=64 * 1024)
    for i in range(8):
        spool.append(bytes([i]) * 30_000)
    segments = sorted(p.name for p in tmp_path.glob("*.seg"))
    kept = {name: (tmp_path / name).read_bytes() for name in segments}
    frames = spool.read(max_frames=4)
    spool.commit(frames)
    spool.close()
    # Put back deleted segments, as if the process died after the commit but before unlink.
    for name, data in kept.items():
        if not (tmp_path / name).exists():
            (tmp_path / name).write_bytes(data)
    again = _open(tmp_path, segment_max_bytes=64 * 1024)
    assert [p[0] for p in _payloads(again)] == [4, 5, 6, 7]
    assert os.path.exists(tmp_path / "COMMIT")
