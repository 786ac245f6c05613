"""A local S3 API server (s3proxy over a directory) for development, tests and ``make run``.

The pinned ``org.gaul:s3proxy:2.6.0`` ``jar-with-dependencies`` is fetched once from Maven
Central with ``mvn dependency:copy``, checked against its pinned SHA-512 before it is
used, and run on the machine's Java 17+ with a properties file: the ``filesystem``
provider keeps every bucket as a directory under ``<server dir>/data``, the endpoint is
bound to the loopback address of the URL, and AWS V2/V4 signatures of one identity are
required, as a real object store would::

    from indexer.local_s3 import LocalS3

    with LocalS3(url="http://127.0.0.1:9290") as s3:   # stops on exit if it started it
        s3.ensure_bucket("otel-audit-archive")

Server directory::

    s3proxy.properties   written on every start
    data/                jclouds.filesystem.basedir: one directory per bucket
    s3proxy.pid          the java process we started
    s3proxy.log          its stdout/stderr
"""

from __future__ import annotations

import fcntl
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from indexer.local_es.dist import file_sha512, find_java, find_mvn
from indexer.local_es.errors import LocalEsError
from indexer.local_s3.config import (
    MAVEN_ARTIFACT,
    S3PROXY_SHA512,
    S3PROXY_VERSION,
    LocalS3Config,
)

__all__ = ["JAR_NAME", "LocalS3", "LocalS3Error", "S3Status", "ensure_jar"]

JAR_NAME = f"s3proxy-{S3PROXY_VERSION}-jar-with-dependencies.jar"
_MARK = "otel-audit-local-s3"


class LocalS3Error(Exception):
    """The local S3 server could not be fetched, started or stopped; the message says why."""


def _stderr(message: str) -> None:
    print(f"local-s3: {message}", file=sys.stderr, flush=True)


def ensure_jar(cache_dir: Path, progress: Callable[[str], None] = _stderr) -> Path:
    """The checked s3proxy jar in ``cache_dir``, downloaded with mvn when missing."""
    jar = cache_dir / JAR_NAME
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / ".s3proxy.lock"):
        if jar.is_file():
            _check(jar)
            return jar
        try:
            mvn = find_mvn()
        except LocalEsError as exc:
            raise LocalS3Error(str(exc)) from None
        progress(f"downloading {MAVEN_ARTIFACT} with mvn into {cache_dir} ...")
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
            fetched = Path(tmp) / JAR_NAME
            if proc.returncode != 0 or not fetched.is_file():
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
                raise LocalS3Error(
                    f"mvn could not download {MAVEN_ARTIFACT} (exit {proc.returncode}); "
                    f"is Maven Central reachable?\n{tail}"
                )
            _check(fetched)
            os.replace(fetched, jar)
    return jar


def _check(jar: Path) -> None:
    actual = file_sha512(jar)
    if actual != S3PROXY_SHA512:
        jar.unlink(missing_ok=True)
        raise LocalS3Error(
            f"checksum mismatch for {jar}: expected SHA-512 {S3PROXY_SHA512}, got {actual}; "
            "the file was removed, run the command again to download it afresh"
        )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class S3Status:
    """What ``status`` reports about the URL."""

    url: str
    running: bool
    """Something answers as an S3 server at the URL."""
    managed: bool
    """A server started by otel-audit for this directory is alive."""
    pid: int | None
    server_dir: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"state": "running" if self.running else "stopped", **asdict(self)}


def _answers_as_s3(host: str, port: int, timeout_s: float = 2.0) -> tuple[bool, str]:
    """(True, "") when an S3 server answers (any status with an S3 request id)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        if resp.getheader("x-amz-request-id"):
            return True, ""
        return False, f"HTTP {resp.status} without an S3 request id"
    except ConnectionRefusedError:
        return False, "free"
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


class LocalS3:
    """Start, stop and inspect the local S3 server at one URL (see the module docstring)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        data_dir: str | Path | None = None,
        config: LocalS3Config | None = None,
        progress: Callable[[str], None] | None = _stderr,
    ) -> None:
        self.config = config or LocalS3Config.from_env(url=url, data_dir=data_dir)
        self._progress = progress or (lambda _m: None)
        self._started_here = False

    @property
    def url(self) -> str:
        """Endpoint URL of the server."""
        return self.config.base_url

    @property
    def _dir(self) -> Path:
        return self.config.server_dir

    @property
    def _pid_file(self) -> Path:
        return self._dir / "s3proxy.pid"

    def client_options(self) -> dict[str, str]:
        """``endpoint_url`` and credentials for an S3 client of this server."""
        return {
            "endpoint_url": self.url,
            "aws_access_key_id": self.config.access_key_id,
            "aws_secret_access_key": self.config.secret_access_key,
        }

    def ensure_started(self) -> bool:
        """Make sure an S3 server answers at the URL; True when this call started it."""
        cfg = self.config
        cfg.require_loopback()
        self._dir.mkdir(parents=True, exist_ok=True)
        with _locked(self._dir / ".start.lock"):
            ok, detail = _answers_as_s3(cfg.host, cfg.port)
            if ok:
                owner = "" if self._our_pid() else " (not started by otel-audit)"
                self._progress(f"reusing the S3 server at {self.url}{owner}")
                return False
            if detail != "free":
                raise LocalS3Error(
                    f"port {cfg.port} is in use by something that is not an S3 server "
                    f"({detail}); stop it or choose another port in OTEL_AUDIT_S3_URL"
                )
            self._start_new()
            self._started_here = True
            return True

    def _start_new(self) -> None:
        cfg = self.config
        try:
            java = find_java()
        except LocalEsError as exc:
            raise LocalS3Error(str(exc)) from None
        jar = ensure_jar(cfg.resolved_cache_dir, self._progress)
        data = self._dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        props = self._dir / "s3proxy.properties"
        props.write_text(
            "# Written by otel-audit local-s3 on every start; edits are overwritten.\n"
            f"s3proxy.endpoint=http://{cfg.host}:{cfg.port}\n"
            "s3proxy.authorization=aws-v2-or-v4\n"
            f"s3proxy.identity={cfg.access_key_id}\n"
            f"s3proxy.credential={cfg.secret_access_key}\n"
            "jclouds.provider=filesystem\n"
            f"jclouds.filesystem.basedir={data}\n",
            encoding="utf-8",
        )
        props.chmod(0o600)
        log = self._dir / "s3proxy.log"
        self._progress(f"starting s3proxy {S3PROXY_VERSION} at {self.url} (dir {self._dir})")
        began = time.monotonic()
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [
                    str(java.home / "bin" / "java"),
                    f"-D{_MARK}={self._dir}",
                    "-Xmx256m",
                    "-jar",
                    str(jar),
                    "--properties",
                    str(props),
                ],
                cwd=self._dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._pid_file.write_text(str(proc.pid), encoding="utf-8")
        deadline = began + cfg.start_timeout_s
        while True:
            ok, _detail = _answers_as_s3(cfg.host, cfg.port, timeout_s=1.0)
            if ok:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    proc.kill()
                self._pid_file.unlink(missing_ok=True)
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise LocalS3Error(
                    f"s3proxy at {self.url} did not start within {cfg.start_timeout_s:.0f} s "
                    f"(exit code {proc.returncode})\n--- {log} ---\n{tail}"
                )
            time.sleep(0.2)
        self._progress(f"s3proxy is up at {self.url} after {time.monotonic() - began:.1f} s")

    def ensure_bucket(self, bucket: str) -> None:
        """Create ``bucket`` unless it exists (s3proxy keeps it as ``data/<bucket>``)."""
        import boto3
        from botocore.config import Config
        from botocore.exceptions import ClientError

        client = boto3.client(
            "s3",
            region_name="us-east-1",
            # s3proxy does not take the flexible checksums newer clients send by default.
            config=Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path"},
            ),
            **self.client_options(),
        )
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError:
            client.create_bucket(Bucket=bucket)

    def stop(self) -> bool:
        """Stop the server this manager's directory started; True when one was stopped."""
        pid = self._our_pid()
        if pid is None:
            ok, _ = _answers_as_s3(self.config.host, self.config.port)
            if ok:
                raise LocalS3Error(
                    f"{self.url} is served by a process otel-audit did not start "
                    f"(no live server for {self._dir}); leaving it alone"
                )
            self._pid_file.unlink(missing_ok=True)
            return False
        self._progress(f"stopping s3proxy at {self.url} (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_timeout_s
        while self._alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._alive(pid):
            os.kill(pid, signal.SIGKILL)
            while self._alive(pid):
                time.sleep(0.1)
        self._pid_file.unlink(missing_ok=True)
        self._started_here = False
        return True

    def status(self) -> S3Status:
        """Whether the URL answers as S3, and whether it is our server."""
        ok, detail = _answers_as_s3(self.config.host, self.config.port)
        pid = self._our_pid()
        return S3Status(
            url=self.url,
            running=ok,
            managed=pid is not None,
            pid=pid,
            server_dir=str(self._dir),
            detail="" if ok or detail == "free" else detail,
        )

    def _alive(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            return False
        # The mark names this directory, so a reused pid is never taken for ours.
        return state not in ("Z", "X") and f"-D{_MARK}={self._dir}".encode() in cmdline

    def _our_pid(self) -> int | None:
        try:
            pid = int(self._pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._alive(pid) else None

    def __enter__(self) -> LocalS3:
        self.ensure_started()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._started_here:
            self.stop()
