"""Helpers for a child process that runs beside us: stop it, read its log, poll its health.

The Collector wrapper and the end-to-end receiver harness both run a long-lived child with
its output in a log file and a health URL to poll; these are the parts they share.
"""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["answers_200", "log_tail", "stop_child"]


def stop_child(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM ``proc`` if alive and wait, SIGKILL after ``timeout_s``; its exit code.

    SIGTERM first so the child can flush and close cleanly; SIGKILL only so that a stuck
    child cannot hang the caller.
    """
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of the log at ``path``, or a note when none was written."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])


def answers_200(url: str, timeout_s: float) -> bool:
    """True when a GET of ``url`` answers 200; False when it fails or cannot connect."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
