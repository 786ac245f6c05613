"""Run the example services of the Node.js and Go helpers (``sdk/*/examples``) as children.

Each example is a small HTTP service that emits audit events through its language's helper
and exports logs and spans over OTLP. It prints ``{"listening": URL}`` as its first line on
stdout, logs JSON to stderr, and flushes its telemetry before it exits on SIGTERM.

- :func:`ensure_sdk_dependencies` installs the helpers' dependencies the way ``make sdk``
  does (npm lock file, Go module proxy), once; :func:`ensure_node_dependencies` only the
  npm part (which also pins the ECS definitions the conformance test reads);
- :func:`build_go_example` compiles one Go example (seconds once Go's build cache is warm);
- :class:`ExampleService` starts one example, waits for its address and stops it.

::

    ExampleError
    ├── ExampleBuildError   the dependencies could not be installed or the build failed
    └── ExampleStartError   the service exited or never said where it listens
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.child_process import log_tail, stop_child

__all__ = [
    "GO_EXAMPLES",
    "NODE_EXAMPLES",
    "ExampleBuildError",
    "ExampleError",
    "ExampleService",
    "ExampleStartError",
    "build_go_example",
    "ensure_node_dependencies",
    "ensure_sdk_dependencies",
]

_REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_EXAMPLES = _REPO_ROOT / "sdk" / "node" / "examples"
GO_EXAMPLES = _REPO_ROOT / "sdk" / "go" / "examples"
_NODE_STAMP = _REPO_ROOT / "sdk" / "node" / "node_modules" / ".installed"
_COMMAND_TIMEOUT_S = 600.0


class ExampleError(Exception):
    """Root of every error raised while preparing or running an example service."""


class ExampleBuildError(ExampleError):
    """The helpers' dependencies could not be installed, or an example did not build."""


class ExampleStartError(ExampleError):
    """The example exited early or never printed the address it listens on."""


def _run(args: Sequence[str], cwd: Path, what: str) -> None:
    tool = shutil.which(args[0])
    if tool is None:
        raise ExampleBuildError(f"{what} needs {args[0]!r} on PATH (see the top-level README)")
    proc = subprocess.run(
        [tool, *args[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=_COMMAND_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        output = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise ExampleBuildError(
            f"{what}: {' '.join(args)} exited with {proc.returncode}:\n{output}"
        )


def ensure_node_dependencies() -> None:
    """``npm ci`` in ``sdk/node`` as ``make sdk`` does, unless that was done already."""
    if not _NODE_STAMP.exists():
        _run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            _NODE_STAMP.parents[1],
            "installing the Node.js helper's dependencies",
        )
        _NODE_STAMP.touch()


def ensure_sdk_dependencies() -> None:
    """Install the helpers' dependencies as ``make sdk`` does, unless that was done already."""
    ensure_node_dependencies()
    _run(["go", "mod", "download"], GO_EXAMPLES, "downloading the Go examples' modules")


def build_go_example(name: str, out_dir: Path) -> Path:
    """Compile ``sdk/go/examples/<name>`` into ``out_dir``; the binary's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / name
    _run(["go", "build", "-o", str(binary), f"./{name}"], GO_EXAMPLES, f"building {name}")
    return binary


@dataclass
class ExampleService:
    """One example service as a child process, with its stderr log in ``work_dir``."""

    name: str
    command: Sequence[str]
    work_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    url: str = field(default="", init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def log_path(self) -> Path:
        """The service's own JSON log (its stderr)."""
        return self.work_dir / f"{self.name}.log"

    def start(self, timeout_s: float = 30.0) -> str:
        """Start the process and return its base URL once it printed it."""
        if self._proc is not None:
            raise ExampleStartError(f"{self.name} is already running")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                list(self.command),
                env={**os.environ, **self.env},
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        assert self._proc.stdout is not None
        line = b""
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(timeout=left):
                    self.stop()
                    raise ExampleStartError(
                        f"{self.name} printed no address within {timeout_s:.0f} s:\n"
                        f"{self.log_tail()}"
                    )
                chunk = os.read(self._proc.stdout.fileno(), 4096)
                if not chunk:
                    code = self.stop()
                    raise ExampleStartError(
                        f"{self.name} exited with {code} before listening:\n{self.log_tail()}"
                    )
                line += chunk
        try:
            self.url = str(json.loads(line.splitlines()[0])["listening"])
        except (ValueError, KeyError, TypeError) as exc:
            self.stop()
            raise ExampleStartError(f"{self.name} printed {line!r}, not its address") from exc
        return self.url

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM (the service flushes its telemetry) and wait; the exit code or None."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        code = stop_child(proc, timeout_s)
        if proc.stdout is not None:
            proc.stdout.close()
        return code

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the service's log."""
        return log_tail(self.log_path, lines)
