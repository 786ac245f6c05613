"""Session fixtures shared by every test package.

``es_url`` starts (or reuses) the local Elasticsearch at OTEL_AUDIT_ES_URL through the
same code as ``otel-audit local-es start`` and stops it at the end only if it started
it. ``es`` is a sync client; ``clean_es`` also wipes project-owned state first.
Under CI=true a skipped test is turned into a failure: CI must exercise everything.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

import pytest
from elasticsearch import Elasticsearch

from indexer.local_es import LocalElasticsearch
from indexer.local_es.state import wipe_project_state


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if _in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which must run every test: {report.longrepr}"
    return report


@pytest.fixture(scope="session")
def es_url() -> Iterator[str]:
    """URL of a healthy Elasticsearch; started here (and stopped after) when not running.

    A non-loopback OTEL_AUDIT_ES_URL is someone's own cluster: used as is, never started.
    """
    node = LocalElasticsearch()
    if not node.config.is_loopback:
        yield node.url
        return
    started = node.ensure_started()
    try:
        yield node.url
    finally:
        if started:
            node.stop()


@pytest.fixture
def es(es_url: str) -> Iterator[Elasticsearch]:
    """A sync client for the session's node."""
    client = Elasticsearch(es_url, request_timeout=30)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def clean_es(es: Elasticsearch) -> Elasticsearch:
    """The client, after deleting every project-owned index, template and repository."""
    wipe_project_state(es)
    return es
