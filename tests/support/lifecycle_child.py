"""A lifecycle run in a process of its own that SIGKILLs itself right after one step.

``python -m tests.support.lifecycle_child CONFIG STEP SHIFT_DAYS``: the receiver's
ingest (with its sealer) records the run's audit events, as in ``otel-audit lifecycle
run``; the process dies by SIGKILL, with no cleanup, when the runner reports ``STEP``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from receiver.config import load_config
from tests.support.lifecycle_harness import Clock, Ingest, runner


def main(argv: list[str]) -> int:
    path, step, shift = Path(argv[0]), argv[1], int(argv[2])
    clock = Clock()
    clock.advance_days(shift)

    def on_step(name: str, day: str) -> None:
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)

    with Ingest(load_config(path)) as ingest:
        runner(path, ingest.record, clock, on_step=on_step).run()
    return 3  # the step never came


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
