"""The spool when its filesystem fails a write: the partial frame is cut off, the batch is
refused as retryable, and a commit still fits on a full disk. The real full disk (a small
tmpfs under load) is the ``disk-full`` row of ``make drill``."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from receiver.errors import Unavailable
from receiver.ingest.spool import Spool, SpoolFull


def _open(path: Path) -> Spool:
    spool = Spool(path, 1 << 20)
    spool.open()
    return spool


def _segment_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.seg"))


def _fail_after(monkeypatch: pytest.MonkeyPatch, allowed: int, err: int) -> None:
    """The next write puts ``allowed`` bytes on disk, the one after fails with ``err``."""
    real_write = os.write
    calls = {"n": 0}

    def write(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:allowed])
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "write", write)


def test_no_space_cuts_the_partial_frame_and_refuses_retryably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = _open(tmp_path)
    spool.append(b"first" * 100)
    durable = _segment_bytes(tmp_path)

    with monkeypatch.context() as patch:
        _fail_after(patch, 37, errno.ENOSPC)
        with pytest.raises(SpoolFull, match="No space left on device") as refused:
            spool.append(b"second" * 100)
    assert refused.value.retry_after_s > 0
    # The 37 bytes of the torn frame are gone: nothing half-written stays behind.
    assert _segment_bytes(tmp_path) == durable
    assert spool.pending_frames == 1

    # Room is back: the next batch lands right after the first, and both read back.
    spool.append(b"third" * 100)
    assert [f.payload for f in spool.read()] == [b"first" * 100, b"third" * 100]
    spool.close()
    again = _open(tmp_path)
    assert [f.payload for f in again.read()] == [b"first" * 100, b"third" * 100]
    again.close()


def test_io_error_is_refused_as_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = _open(tmp_path)
    with monkeypatch.context() as patch:
        _fail_after(patch, 5, errno.EIO)
        with pytest.raises(Unavailable, match="Input/output error") as refused:
            spool.append(b"lost?" * 100)
    assert not isinstance(refused.value, SpoolFull)
    assert _segment_bytes(tmp_path) == 0
    assert spool.pending_frames == 0
    spool.close()


def test_commit_on_a_full_disk_uses_the_room_held_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = _open(tmp_path)
    reserve = tmp_path / "RESERVE"
    assert reserve.stat().st_size > 0
    spool.append(b"a" * 1000)
    spool.append(b"b" * 1000)
    frames = spool.read()

    real_open = Path.open
    state = {"full": True}

    def open_(self: Path, mode: str = "r", *args: object, **kw: object) -> object:
        # The disk stays full until something is deleted.
        if state["full"] and self.name.startswith("COMMIT") and "w" in mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(self, mode, *args, **kw)  # type: ignore[call-overload]

    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name == "RESERVE":
            state["full"] = False
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "open", open_)
    monkeypatch.setattr(Path, "unlink", unlink)
    spool.commit(frames)
    monkeypatch.undo()

    assert spool.is_empty
    assert _segment_bytes(tmp_path) == 0
    assert reserve.exists(), "the room is held back again once segments are gone"
    spool.close()
    again = _open(tmp_path)
    assert again.read() == []
    again.close()
