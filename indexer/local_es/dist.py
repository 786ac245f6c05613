"""The pinned Elasticsearch distribution: tool checks, download, checksum, unpack.

The archive is fetched once with ``mvn dependency:copy`` into the cache directory,
checked against the pinned SHA-512 before anything is extracted, and unpacked into a
temporary sibling that is renamed into place, so an interrupted unpack never leaves a
half tree that later runs would trust.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from indexer.local_es.config import ES_SHA512, ES_VERSION
from indexer.local_es.errors import (
    INSTALL_HINT,
    ChecksumMismatchError,
    DistributionError,
    MissingToolError,
)

__all__ = [
    "MAVEN_ARTIFACT",
    "JavaRuntime",
    "ensure_distribution",
    "extract_zip",
    "file_sha512",
    "find_java",
    "find_mvn",
    "verify_checksum",
]

MAVEN_ARTIFACT = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{ES_VERSION}:zip"
MIN_JAVA = 17
_JAVA_VERSION_RE = re.compile(r'version "(\d+)(?:\.(\d+))?')


@dataclass(frozen=True)
class JavaRuntime:
    """A Java installation good enough for Elasticsearch (passed as ES_JAVA_HOME)."""

    home: Path
    major: int


def _progress(message: str) -> None:
    print(f"local-es: {message}", file=sys.stderr, flush=True)


def java_major(version_output: str) -> int | None:
    """Major version from ``java -version`` output (handles ``1.8`` and ``17.0.15``)."""
    match = _JAVA_VERSION_RE.search(version_output)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        return int(match.group(2))
    return major


def find_java() -> JavaRuntime:
    """Locate java 17+ from JAVA_HOME or PATH, or raise :class:`MissingToolError`."""
    java_home_env = os.environ.get("JAVA_HOME")
    candidate: Path | None = None
    if java_home_env and (Path(java_home_env) / "bin" / "java").is_file():
        candidate = Path(java_home_env) / "bin" / "java"
    else:
        found = shutil.which("java")
        if found:
            candidate = Path(found)
    if candidate is None:
        raise MissingToolError(
            f"java {MIN_JAVA}+ is required to run Elasticsearch but no java was found on "
            f"PATH or in JAVA_HOME; install it ({INSTALL_HINT})"
        )
    try:
        proc = subprocess.run(
            [str(candidate), "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MissingToolError(f"could not run {candidate} -version: {exc}") from None
    output = proc.stderr + proc.stdout
    major = java_major(output)
    if proc.returncode != 0 or major is None:
        raise MissingToolError(
            f"{candidate} -version failed or printed no version ({output.strip()[:200]!r}); "
            f"install java {MIN_JAVA}+ ({INSTALL_HINT})"
        )
    if major < MIN_JAVA:
        raise MissingToolError(
            f"Elasticsearch {ES_VERSION} needs java {MIN_JAVA}+, but {candidate} is java "
            f"{major}; install a newer one ({INSTALL_HINT}) or point JAVA_HOME at it"
        )
    # PATH usually holds /usr/bin/java -> /etc/alternatives -> the real JDK/JRE home.
    home = candidate.resolve().parent.parent
    return JavaRuntime(home=home, major=major)


def find_mvn() -> str:
    """Path of ``mvn``, or raise :class:`MissingToolError`."""
    found = shutil.which("mvn")
    if not found:
        raise MissingToolError(
            "mvn (Apache Maven) is required to download Elasticsearch from Maven Central "
            f"but was not found on PATH; install it ({INSTALL_HINT})"
        )
    return found


def file_sha512(path: Path) -> str:
    """Hex SHA-512 of a file, read in chunks."""
    digest = hashlib.sha512()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path, expected: str = ES_SHA512) -> None:
    """Raise :class:`ChecksumMismatchError` (and delete the file) when it does not match."""
    actual = file_sha512(path)
    if actual != expected.lower():
        path.unlink(missing_ok=True)
        raise ChecksumMismatchError(str(path), expected.lower(), actual)


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _download(cache_dir: Path, target: Path) -> None:
    mvn = find_mvn()
    _progress(f"downloading {MAVEN_ARTIFACT} with mvn into {cache_dir} ...")
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache_dir) as tmp:
        cmd = [
            mvn,
            "-q",
            "-B",
            "dependency:copy",
            f"-Dartifact={MAVEN_ARTIFACT}",
            f"-DoutputDirectory={tmp}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        fetched = Path(tmp) / target.name
        if proc.returncode != 0 or not fetched.is_file():
            output = (proc.stdout + proc.stderr).strip().splitlines()[-20:]
            raise DistributionError(
                f"mvn could not download {MAVEN_ARTIFACT} (exit {proc.returncode}); "
                "is Maven Central reachable?\n" + "\n".join(output)
            )
        verify_checksum(fetched)
        os.replace(fetched, target)


def extract_zip(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest`` keeping the Unix modes (zipfile drops them)."""
    dest_resolved = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            out = (dest / info.filename).resolve()
            if out != dest_resolved and dest_resolved not in out.parents:
                raise DistributionError(f"{archive}: entry {info.filename!r} escapes the archive")
            zf.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o7777
            if mode:
                os.chmod(out, mode)


def ensure_distribution(cache_dir: Path) -> Path:
    """Return the unpacked ES_HOME for the pinned version, fetching it if needed."""
    home = cache_dir / f"elasticsearch-{ES_VERSION}"
    if (home / "bin" / "elasticsearch").is_file():
        return home
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / ".lock"):
        if (home / "bin" / "elasticsearch").is_file():
            return home  # another process finished while we waited for the lock
        archive = cache_dir / f"elasticsearch-{ES_VERSION}.zip"
        if archive.is_file():
            verify_checksum(archive)
        else:
            _download(cache_dir, archive)
        _progress(f"unpacking {archive.name} into {cache_dir} ...")
        with tempfile.TemporaryDirectory(prefix=".unpack-", dir=cache_dir) as tmp:
            extract_zip(archive, Path(tmp))
            unpacked = Path(tmp) / home.name
            if not (unpacked / "bin" / "elasticsearch").is_file():
                raise DistributionError(f"{archive} does not contain {home.name}/bin/elasticsearch")
            os.chmod(unpacked, 0o755)
            os.replace(unpacked, home)
    return home
