"""Fixtures for tests that need the real otel-audit Collector build.

``collector_binary`` builds (or reuses the cached) ``otelcol-audit`` once per session;
``start_collector`` starts Collector processes on free local ports and stops them at the
end of the test. Both never skip: a missing Go toolchain or a failed build is a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.support.collector_build import (
    MAIN_CONFIG,
    CollectorBuildError,
    CollectorPorts,
    CollectorProcess,
    ensure_collector,
)

StartCollector = Callable[..., CollectorProcess]


@pytest.fixture(scope="session")
def collector_binary() -> Path:
    """Path of the built ``otelcol-audit`` (a cold build takes a few minutes)."""
    try:
        return ensure_collector()
    except CollectorBuildError as exc:
        pytest.fail(f"could not build the Collector: {exc}", pytrace=False)


@pytest.fixture
def start_collector(collector_binary: Path, tmp_path: Path) -> Iterator[StartCollector]:
    """Factory: ``start_collector(receiver_endpoint, configs=..., env=..., ...)``.

    Each call starts one Collector (healthy on return) with its own work directory under
    ``tmp_path`` unless ``work_dir`` is given; every process is stopped at teardown.
    """
    started: list[CollectorProcess] = []

    def start(
        receiver_endpoint: str,
        *,
        configs: Sequence[Path] = (MAIN_CONFIG,),
        env: Mapping[str, str] | None = None,
        work_dir: Path | None = None,
        ports: CollectorPorts | None = None,
        timeout_s: float = 30.0,
    ) -> CollectorProcess:
        collector = CollectorProcess(
            binary=collector_binary,
            receiver_endpoint=receiver_endpoint,
            work_dir=work_dir or tmp_path / f"collector-{len(started)}",
            configs=configs,
            env=dict(env or {}),
            ports=ports or CollectorPorts.pick_free(),
        )
        started.append(collector)
        collector.start(timeout_s=timeout_s)
        return collector

    yield start
    for collector in started:
        collector.shutdown()
