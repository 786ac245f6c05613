"""Build, validate and run the otel-audit OpenTelemetry Collector (``otelcol-audit``).

The Collector is built from the Go module proxy by ``scripts/build-collector.sh`` with the
OpenTelemetry Collector Builder and cached outside the repository (see
``collector-config/README.md``). This module is the Python side of that script, used by the
test suites and by anyone who wants the real Collector next to a receiver:

- :func:`ensure_collector` builds (or reuses) the binary and returns its path;
- :func:`validate_config` runs ``otelcol-audit validate`` on one or more merged configs;
- :class:`CollectorProcess` runs the Collector on free local ports with the environment the
  configs read, waits for its health check, and stops it.

::

    CollectorError
    ├── CollectorBuildError   the build script is missing or failed
    └── CollectorStartError   the process exited or never became healthy

Set ``OTEL_AUDIT_COLLECTOR_BINARY`` to use an existing ``otelcol-audit`` instead of building.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from indexer.local_es.node import free_port as local_es_free_port
from tests.support.child_process import answers_200, log_tail, stop_child

__all__ = [
    "BUILD_SCRIPT",
    "CONFIG_DIR",
    "MAIN_CONFIG",
    "CollectorBuildError",
    "CollectorError",
    "CollectorPorts",
    "CollectorProcess",
    "CollectorStartError",
    "ValidationResult",
    "ensure_collector",
    "free_port",
    "validate_config",
]

_REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = _REPO_ROOT / "scripts" / "build-collector.sh"
CONFIG_DIR = _REPO_ROOT / "collector-config"
MAIN_CONFIG = CONFIG_DIR / "otelcol-audit.yaml"

# Lines of build output kept for the error message when the build fails.
_BUILD_ERROR_TAIL_LINES = 40


class CollectorError(Exception):
    """Root of every error raised while building or running the Collector."""


class CollectorBuildError(CollectorError):
    """The Collector could not be built (or the given binary is unusable)."""


class CollectorStartError(CollectorError):
    """The Collector process exited early or never reported healthy."""


def ensure_collector(*, force: bool = False, timeout_s: float = 1800.0) -> Path:
    """Return the path of a built ``otelcol-audit``, building it first when needed.

    The build script's progress is forwarded to stderr as it happens. A cached binary is
    reused when the builder manifest and the Go version are unchanged, which takes
    milliseconds; a first build on 2 cores takes a few minutes.
    """
    override = os.environ.get("OTEL_AUDIT_COLLECTOR_BINARY")
    if override:
        binary = Path(override)
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise CollectorBuildError(
                f"OTEL_AUDIT_COLLECTOR_BINARY={override} is not an executable file"
            )
        return binary
    if not BUILD_SCRIPT.is_file():
        raise CollectorBuildError(
            f"build script not found at {BUILD_SCRIPT}; building the Collector needs a "
            "source checkout of otel-audit (or set OTEL_AUDIT_COLLECTOR_BINARY)"
        )
    command = ["bash", str(BUILD_SCRIPT), *(["--force"] if force else [])]
    tail: collections.deque[str] = collections.deque(maxlen=_BUILD_ERROR_TAIL_LINES)
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        deadline = time.monotonic() + timeout_s
        # The script writes progress to stderr and only the binary path to stdout, so
        # stderr can be streamed line by line without a deadlock on a full stdout pipe.
        for line in proc.stderr:
            sys.stderr.write(line)
            tail.append(line.rstrip("\n"))
            if time.monotonic() > deadline:
                proc.kill()
                raise CollectorBuildError(f"Collector build took longer than {timeout_s:.0f} s")
        out = proc.stdout.read()
        code = proc.wait()
    if code != 0:
        detail = "\n".join(tail)
        raise CollectorBuildError(f"{BUILD_SCRIPT.name} exited with {code}:\n{detail}")
    lines = out.strip().splitlines()
    binary = Path(lines[-1]) if lines else Path()
    if not (lines and binary.is_file()):
        raise CollectorBuildError(
            f"{BUILD_SCRIPT.name} succeeded but printed no binary path (stdout: {out!r})"
        )
    return binary


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of ``otelcol-audit validate``: ``ok`` and the Collector's own message."""

    ok: bool
    message: str


def validate_config(
    binary: Path,
    configs: Sequence[Path],
    env: Mapping[str, str] | None = None,
    *,
    timeout_s: float = 60.0,
) -> ValidationResult:
    """Run ``validate`` on ``configs`` (merged in order, later ones win) with ``env`` added.

    The Collector resolves ``${env:...}`` while validating, so pass the variables the
    configs need; a missing required one is reported like any other invalid value.
    """
    if not configs:
        raise ValueError("validate_config needs at least one config file")
    args = [str(binary), "validate", *(f"--config={path}" for path in configs)]
    proc = subprocess.run(
        args,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return ValidationResult(ok=proc.returncode == 0, message=(proc.stderr + proc.stdout).strip())


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago (outside the ephemeral
    range, so a server restarted on it is not beaten to it by an outgoing connection)."""
    return local_es_free_port(host)


@dataclass(frozen=True)
class CollectorPorts:
    """The local ports one Collector process listens on."""

    grpc: int
    http: int
    health: int
    metrics: int

    @classmethod
    def pick_free(cls) -> CollectorPorts:
        """Pick four distinct free ports on 127.0.0.1."""
        picked: set[int] = set()
        while len(picked) < 4:
            picked.add(free_port())
        grpc, http, health, metrics = sorted(picked)
        return cls(grpc=grpc, http=http, health=health, metrics=metrics)


@dataclass
class CollectorProcess:
    """A running ``otelcol-audit`` bound to 127.0.0.1, for tests and local runs.

    ``receiver_endpoint`` is the otel-audit receiver's OTLP gRPC ``host:port``; the queue
    lives in ``work_dir/queue`` and the Collector's own log in ``work_dir/otelcol-audit.log``.
    ``configs`` default to the main config; ``env`` adds or overrides variables (for
    example ``OTEL_AUDIT_BACKEND_ENDPOINT`` or ``OTEL_AUDIT_BACKEND_FILE``). Use it as a
    context manager, or call :meth:`start` and :meth:`shutdown`.
    """

    binary: Path
    receiver_endpoint: str
    work_dir: Path
    configs: Sequence[Path] = (MAIN_CONFIG,)
    env: Mapping[str, str] = field(default_factory=dict)
    ports: CollectorPorts = field(default_factory=CollectorPorts.pick_free)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def otlp_grpc_endpoint(self) -> str:
        """``host:port`` of the Collector's OTLP gRPC receiver."""
        return f"127.0.0.1:{self.ports.grpc}"

    @property
    def otlp_http_endpoint(self) -> str:
        """Base URL of the Collector's OTLP/HTTP receiver."""
        return f"http://127.0.0.1:{self.ports.http}"

    @property
    def health_url(self) -> str:
        """URL of the health_check extension."""
        return f"http://127.0.0.1:{self.ports.health}/"

    @property
    def storage_dir(self) -> Path:
        """Directory of the persistent queue (file_storage)."""
        return self.work_dir / "queue"

    @property
    def log_path(self) -> Path:
        """File that receives the Collector's stdout and stderr."""
        return self.work_dir / "otelcol-audit.log"

    def environment(self) -> dict[str, str]:
        """The environment the process runs with: ours, then ports and paths, then ``env``."""
        return {
            **os.environ,
            "OTEL_AUDIT_RECEIVER_ENDPOINT": self.receiver_endpoint,
            "OTEL_AUDIT_COLLECTOR_STORAGE_DIR": str(self.storage_dir),
            "OTEL_AUDIT_COLLECTOR_BIND_HOST": "127.0.0.1",
            "OTEL_AUDIT_COLLECTOR_GRPC_PORT": str(self.ports.grpc),
            "OTEL_AUDIT_COLLECTOR_HTTP_PORT": str(self.ports.http),
            "OTEL_AUDIT_COLLECTOR_HEALTH_PORT": str(self.ports.health),
            "OTEL_AUDIT_COLLECTOR_METRICS_PORT": str(self.ports.metrics),
            **self.env,
        }

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the process and return once its health check answers 200."""
        if self._proc is not None:
            raise CollectorStartError("this Collector is already started")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        args = [str(self.binary), *(f"--config={path}" for path in self.configs)]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                args,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise CollectorStartError(
                    f"otelcol-audit exited with {code} during start:\n{self.log_tail()}"
                )
            if self._healthy():
                return
            if time.monotonic() > deadline:
                self.shutdown()
                raise CollectorStartError(
                    f"otelcol-audit not healthy at {self.health_url} after {timeout_s:.0f} s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)

    def shutdown(self, timeout_s: float = 15.0) -> int | None:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout_s``); idempotent.

        Returns the exit code, or None when it was not running. A graceful stop lets the
        Collector flush its in-memory batches; the persistent queue keeps the rest.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        return stop_child(proc, timeout_s)

    def is_running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the Collector's log."""
        return log_tail(self.log_path, lines)

    def _healthy(self) -> bool:
        return answers_200(self.health_url, timeout_s=1.0)

    def __enter__(self) -> CollectorProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()
