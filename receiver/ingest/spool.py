"""A bounded, append-only local spool: where batches wait while Elasticsearch is unavailable.

Layout of the spool directory::

    LOCK                    flock'ed by the one process that owns the spool
    COMMIT                  {"segment": N, "offset": M}: everything before it reached ES
    RESERVE                 64 KiB of zeros held back so a commit fits on a full disk
    00000000000000000007.seg
    00000000000000000008.seg    append-only segment files of framed records

One frame per batch: ``b"OAS1" | payload length (u32 BE) | crc32(payload) (u32 BE) | payload``.
:meth:`Spool.append` writes the frame and fsyncs the file (and the directory when it created
a segment) before returning, so a batch is acknowledged only once it survives a crash.

Reading is in append order from the committed position. :meth:`Spool.commit` records a
new position durably (write, fsync, rename, fsync directory) only after Elasticsearch
acknowledged what lies before it; fully consumed segments are then deleted. A crash
between the Elasticsearch acknowledgement and the commit replays those frames once more,
which is harmless because every write is ``op_type=create`` with a deterministic id (a 409
with the same content hash is success): together that makes the store exactly-once.

A torn or corrupt tail (a crash in the middle of an append) is found when the spool is
opened: the bad bytes are moved to ``<segment>.corrupt`` for inspection, the segment is
truncated at the last good frame and a warning is logged. Those bytes were never
acknowledged (the fsync did not complete), so nothing acknowledged is lost. Corrupt bytes
in the middle (outside damage) are set aside the same way, logged with their offset, and
every intact frame after them is kept: the scan resumes at the next frame whose magic,
length and CRC check out.

The spool never grows past ``max_bytes``: :meth:`Spool.append` raises
:class:`receiver.errors.Unavailable` instead, so the client keeps the data and retries.
The filesystem may fill before that: a write or fsync that fails (ENOSPC, EIO) is never
acknowledged; the partial frame is truncated off, the error is logged and the batch refused
as retryable (:class:`SpoolFull` for no space). The commit that frees a full disk must itself
write a file, so ``RESERVE`` is released for it and taken again once segments are deleted.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import orjson

from indexer.state_files import fsync_dir, lock_dir
from receiver.errors import Unavailable

__all__ = ["Frame", "RecoveryReport", "Spool", "SpoolFull", "SpoolPosition"]

_log = logging.getLogger(__name__)

MAGIC = b"OAS1"
_HEADER = struct.Struct(">4sII")
_SUFFIX = ".seg"
_COMMIT = "COMMIT"
_RESERVE = "RESERVE"
_RESERVE_BYTES = 64 * 1024
"""Room held back on the spool's filesystem for the commit file: when the spool filled the
disk, the commit that frees it must still be writable."""
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class SpoolFull(Unavailable):
    """The spool has no room for the batch; the client should retry later."""


class SpoolPosition(NamedTuple):
    """A place in the spool: segment number and byte offset inside it."""

    segment: int
    offset: int


class Frame(NamedTuple):
    """One spooled batch and the position right after it (what to commit once stored)."""

    payload: bytes
    end: SpoolPosition


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What :meth:`Spool.open` found."""

    frames: int
    bytes: int
    truncated_bytes: int
    """Bytes of torn or corrupt tails set aside (moved to ``*.corrupt``)."""


def _segment_name(seq: int) -> str:
    return f"{seq:020d}{_SUFFIX}"


class Spool:
    """The spool in one directory. Methods block on disk I/O: call them from a thread.

    One writer (``append``) and one reader (``read``/``rewind``/``commit``) may run
    concurrently; the reader only sees frames whose fsync completed.
    """

    def __init__(
        self,
        directory: str | Path,
        max_bytes: int,
        *,
        segment_max_bytes: int | None = None,
        retry_after_s: float = 5.0,
    ) -> None:
        if max_bytes < 1024:
            raise ValueError(f"spool_max_bytes must be >= 1024, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_max_bytes = segment_max_bytes or max(
            64 * 1024, min(64 * 1024 * 1024, max_bytes // 8)
        )
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}
        """Durable size of every live segment, in segment order."""
        self._active_fd: int | None = None
        self._active_seq = 0
        self._next_seq = 1
        self._commit = SpoolPosition(0, 0)
        self._read = SpoolPosition(0, 0)
        self._frames = 0
        self._lock_fd: int | None = None

    # -- lifecycle -------------------------------------------------------------

    def open(self) -> RecoveryReport:
        """Lock the directory, recover after a crash, and get ready to append."""
        self._lock_fd = lock_dir(
            self.directory, 0o600, f"spool directory {self.directory} is in use by another process"
        )
        with self._lock:
            report = self._recover()
        if not self._reserve_path.exists():
            self._hold_reserve()
        return report

    def close(self) -> None:
        """Close files and release the directory. Idempotent."""
        with self._lock:
            if self._active_fd is not None:
                os.close(self._active_fd)
                self._active_fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _recover(self) -> RecoveryReport:
        self._commit = self._load_commit()
        seqs = sorted(
            int(p.name[: -len(_SUFFIX)])
            for p in self.directory.iterdir()
            if p.name.endswith(_SUFFIX) and p.name[: -len(_SUFFIX)].isdigit()
        )
        removed = False
        for seq in [s for s in seqs if s < self._commit.segment]:
            # Consumed before the crash; the commit was durable, the delete was not.
            (self.directory / _segment_name(seq)).unlink()
            removed = True
        if removed:
            fsync_dir(self.directory)
        seqs = [s for s in seqs if s >= self._commit.segment]
        if seqs and seqs[0] != self._commit.segment:
            self._commit = SpoolPosition(seqs[0], 0)
        frames = 0
        total = 0
        truncated = 0
        for seq in seqs:
            start = self._commit.offset if seq == self._commit.segment else 0
            good_end, count, cut = self._scan(seq, start)
            self._sizes[seq] = good_end
            frames += count
            total += good_end - start
            truncated += cut
        self._frames = frames
        self._read = self._commit
        self._active_seq = seqs[-1] if seqs else self._commit.segment
        # A segment number is never reused: the commit may still name a deleted one.
        self._next_seq = max([*seqs, self._commit.segment]) + 1
        if seqs:
            self._active_fd = os.open(
                self.directory / _segment_name(self._active_seq), os.O_WRONLY | os.O_APPEND
            )
        if frames:
            _log.warning(
                "spool %s holds %d unsent batches (%d bytes) from before a restart; replaying",
                self.directory,
                frames,
                total,
            )
        return RecoveryReport(frames=frames, bytes=total, truncated_bytes=truncated)

    def _load_commit(self) -> SpoolPosition:
        path = self.directory / _COMMIT
        try:
            raw = orjson.loads(path.read_bytes())
            return SpoolPosition(int(raw["segment"]), int(raw["offset"]))
        except FileNotFoundError:
            return SpoolPosition(0, 0)
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
            # The commit file is replaced atomically, so this is outside damage. Replaying
            # from the start is safe (creates are idempotent); losing data is not.
            _log.warning("spool commit file %s is unreadable (%s); replaying everything", path, exc)
            return SpoolPosition(0, 0)

    def _scan(self, seq: int, start: int) -> tuple[int, int, int]:
        """Verify frames from ``start``; set bad bytes aside. Returns (good end, frames,
        bytes set aside).

        A bad tail (a torn append) is cut off. Bad bytes followed by intact frames (a
        damaged block in the middle) are cut out: the intact frames after them are kept,
        the segment rewritten without the bad bytes (temporary file, fsync, rename).
        """
        path = self.directory / _segment_name(seq)
        data = path.read_bytes()
        offset = min(start, len(data))
        count = 0
        bad: list[tuple[int, int]] = []
        while offset < len(data):
            if self._frame_at(data, offset) is None:
                resume = self._next_frame(data, offset + 1)
                bad.append((offset, resume))
                offset = resume
                continue
            offset += _HEADER.size + _HEADER.unpack_from(data, offset)[1]
            count += 1
        if not bad:
            return offset, count, 0
        corrupt = path.with_name(path.name + ".corrupt")
        with corrupt.open("ab") as fh:
            for begin, end in bad:
                fh.write(data[begin:end])
            fh.flush()
            os.fsync(fh.fileno())
        cut = sum(end - begin for begin, end in bad)
        if len(bad) == 1 and bad[0][1] == len(data):
            good_end = bad[0][0]
            with path.open("r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(self.directory)
            _log.warning(
                "spool segment %s: %d bytes after offset %d are a torn or corrupt tail "
                "(never acknowledged); moved to %s and truncated",
                path,
                cut,
                good_end,
                corrupt.name,
            )
            return good_end, count, cut
        kept = [data[: bad[0][0]]]
        kept += [data[end:begin] for (_, end), (begin, _) in itertools.pairwise(bad)]
        kept.append(data[bad[-1][1] :])
        body = b"".join(kept)
        tmp = path.with_name(path.name + ".rewrite")
        with tmp.open("wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(self.directory)
        for begin, end in bad:
            _log.error(
                "spool segment %s: %d corrupt bytes at offset %d set aside to %s; the %s "
                "after them are kept",
                path,
                end - begin,
                begin,
                corrupt.name,
                "intact frames" if end < len(data) else "nothing",
            )
        return len(body), count, cut

    @classmethod
    def _next_frame(cls, data: bytes, offset: int) -> int:
        """Offset of the first intact frame at or after ``offset`` (else the end)."""
        while True:
            found = data.find(MAGIC, offset)
            if found < 0:
                return len(data)
            if cls._frame_at(data, found) is not None:
                return found
            offset = found + 1

    @staticmethod
    def _frame_at(data: bytes, offset: int) -> bytes | None:
        if len(data) - offset < _HEADER.size:
            return None
        magic, length, crc = _HEADER.unpack_from(data, offset)
        begin = offset + _HEADER.size
        if magic != MAGIC or begin + length > len(data):
            return None
        payload = data[begin : begin + length]
        if zlib.crc32(payload) != crc:
            return None
        return payload

    # -- state -----------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        """Bytes of unsent frames on disk (what counts against ``max_bytes``)."""
        with self._lock:
            return self._used()

    def _used(self) -> int:
        used = sum(self._sizes.values())
        if self._commit.segment in self._sizes:
            used -= self._commit.offset
        return used

    @property
    def pending_frames(self) -> int:
        """Batches appended but not yet committed."""
        with self._lock:
            return self._frames

    @property
    def is_empty(self) -> bool:
        """Nothing waits to be sent."""
        with self._lock:
            return self._frames == 0

    # -- writing ---------------------------------------------------------------

    def append(self, payload: bytes) -> SpoolPosition:
        """Append one batch and fsync it; returns the position after it.

        Raises :class:`SpoolFull` when the batch does not fit in ``max_bytes``.
        """
        frame = _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            if self._lock_fd is None:
                raise Unavailable("the spool is closed", self.retry_after_s)
            used = self._used()
            if used + len(frame) > self.max_bytes:
                raise SpoolFull(
                    f"spool is full ({used} of {self.max_bytes} bytes used, batch needs "
                    f"{len(frame)}) while Elasticsearch is unavailable",
                    self.retry_after_s,
                )
            size = self._sizes.get(self._active_seq)
            created = False
            if (
                self._active_fd is None
                or size is None
                or (size > 0 and size + len(frame) > self.segment_max_bytes)
            ):
                self._roll()
                created = True
            assert self._active_fd is not None
            try:
                written = os.write(self._active_fd, frame)
                while written < len(frame):
                    written += os.write(self._active_fd, frame[written:])
                os.fsync(self._active_fd)
                if created:
                    fsync_dir(self.directory)
            except OSError as exc:
                self._cut_partial_frame()
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                _log.error(
                    "cannot write the spool %s (%s); the batch is refused with a retryable "
                    "error and nothing of it is kept",
                    self.directory,
                    reason,
                )
                message = f"cannot write the spool: {reason}"
                if exc.errno in _NO_SPACE:
                    raise SpoolFull(message, self.retry_after_s) from exc
                raise Unavailable(message, self.retry_after_s) from exc
            self._sizes[self._active_seq] += len(frame)
            self._frames += 1
            return SpoolPosition(self._active_seq, self._sizes[self._active_seq])

    def _cut_partial_frame(self) -> None:
        """Cut what a failed append left after the last durable frame of the active segment.

        A partial frame must not stay on disk: appending after it would hide the later
        frames behind a torn one. When even the truncation fails, a fresh segment is
        started instead (the next open cuts the torn tail).
        """
        durable = self._sizes.get(self._active_seq, 0)
        try:
            assert self._active_fd is not None
            os.ftruncate(self._active_fd, durable)
            os.fsync(self._active_fd)
            return
        except OSError as exc:
            _log.error(
                "cannot cut a partial frame off spool segment %s at offset %d (%s); "
                "starting a new segment",
                _segment_name(self._active_seq),
                durable,
                exc,
            )
        try:
            self._roll()
            fsync_dir(self.directory)
        except OSError as exc:
            # No segment to append to: the next append tries to start one again.
            self._active_fd = None
            _log.error("cannot start a new spool segment in %s (%s)", self.directory, exc)

    def _roll(self) -> None:
        if self._active_fd is not None:
            os.close(self._active_fd)
            self._active_fd = None
        self._active_seq = self._next_seq
        self._next_seq += 1
        path = self.directory / _segment_name(self._active_seq)
        self._active_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        self._sizes[self._active_seq] = 0

    # -- reading ---------------------------------------------------------------

    def read(self, max_frames: int = 1 << 30, max_bytes: int = 1 << 62) -> list[Frame]:
        """Up to ``max_frames`` frames (at least one if any) after the read cursor.

        Stops early once ``max_bytes`` of payload are gathered.
        """
        out: list[Frame] = []
        total = 0
        fh = None
        fh_seq = -1
        try:
            while len(out) < max_frames and (not out or total < max_bytes):
                with self._lock:
                    pos = self._read
                    seqs = [s for s in self._sizes if s >= pos.segment]
                    if not seqs:
                        break
                    seq = seqs[0]
                    if seq != pos.segment:
                        pos = SpoolPosition(seq, 0)
                    size = self._sizes[seq]
                    has_next = len(seqs) > 1
                if pos.offset >= size:
                    if not has_next:
                        break
                    with self._lock:
                        self._read = SpoolPosition(seqs[1], 0)
                    continue
                if fh_seq != seq:
                    if fh is not None:
                        fh.close()
                    fh = (self.directory / _segment_name(seq)).open("rb")
                    fh_seq = seq
                assert fh is not None
                fh.seek(pos.offset)
                header = fh.read(_HEADER.size)
                length = _HEADER.unpack(header)[1] if len(header) == _HEADER.size else -1
                payload = fh.read(length) if length >= 0 else b""
                if self._frame_at(header + payload, 0) is None:
                    raise RuntimeError(f"spool segment {seq} is corrupt at offset {pos.offset}")
                end = SpoolPosition(seq, pos.offset + _HEADER.size + length)
                out.append(Frame(payload, end))
                total += length
                with self._lock:
                    self._read = end
        finally:
            if fh is not None:
                fh.close()
        return out

    def rewind(self) -> None:
        """Move the read cursor back to the commit (after a failed send)."""
        with self._lock:
            self._read = self._commit

    def commit(self, frames: list[Frame]) -> None:
        """Record durably that ``frames`` (the next ones after the commit) reached ES."""
        if not frames:
            return
        end = frames[-1].end
        try:
            self._write_commit(end)
        except OSError as exc:
            if exc.errno not in _NO_SPACE or not self._release_reserve():
                raise
            # The spool filled the disk: the room held back lets this commit free it.
            self._write_commit(end)
        with self._lock:
            self._commit = end
            self._frames = max(0, self._frames - len(frames))
            done = [
                s
                for s in self._sizes
                if s < end.segment
                or (s == end.segment and end.offset >= self._sizes[s] and self._frames == 0)
            ]
            for seq in done:
                if seq == self._active_seq and self._active_fd is not None:
                    os.close(self._active_fd)
                    self._active_fd = None
                del self._sizes[seq]
                (self.directory / _segment_name(seq)).unlink(missing_ok=True)
        if done:
            fsync_dir(self.directory)
            if not self._reserve_path.exists():
                self._hold_reserve()

    def _write_commit(self, end: SpoolPosition) -> None:
        tmp = self.directory / (_COMMIT + ".tmp")
        try:
            with tmp.open("wb") as fh:
                fh.write(orjson.dumps({"segment": end.segment, "offset": end.offset}))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.directory / _COMMIT)
        fsync_dir(self.directory)

    @property
    def _reserve_path(self) -> Path:
        return self.directory / _RESERVE

    def _hold_reserve(self) -> None:
        """Hold ``_RESERVE_BYTES`` of the filesystem back for commits (best effort)."""
        path = self._reserve_path
        try:
            with path.open("wb") as fh:
                fh.write(bytes(_RESERVE_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(self.directory)
        except OSError as exc:
            path.unlink(missing_ok=True)
            _log.warning(
                "cannot hold %d bytes back for commits in %s (%s); trying again after the "
                "next commit frees room",
                _RESERVE_BYTES,
                self.directory,
                exc,
            )

    def _release_reserve(self) -> bool:
        """Give the held-back room to a commit; False when none is held."""
        path = self._reserve_path
        if not path.exists():
            return False
        path.unlink()
        fsync_dir(self.directory)
        _log.warning(
            "spool filesystem of %s is full; released the room held back to commit", self.directory
        )
        return True
