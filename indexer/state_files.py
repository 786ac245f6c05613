"""Directories that hold state across crashes: one owner at a time, writes never torn.

The spool, the integrity state and the checkpoint store all depend on a rename being
durable, which takes an fsync of the file before the rename and of its directory after;
the spool and the integrity state also refuse a second process in the same directory.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["fsync_dir", "lock_dir", "write_atomic"]


def fsync_dir(path: Path) -> None:
    """Flush the directory entry list of ``path``, so creations and renames in it persist."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` through a synced temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def lock_dir(directory: Path, mode: int, busy: str) -> int:
    """Create ``directory`` and lock its ``LOCK`` file; the descriptor holding the lock.

    The lock lasts until the descriptor is closed (or the process dies, so a crash never
    leaves a stale lock). RuntimeError with ``busy`` when another process holds it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(busy) from None
    return fd
