"""Session fixtures shared by every test package.

``es_url`` starts (or reuses) the local Elasticsearch at OTEL_AUDIT_ES_URL through the
same code as ``otel-audit local-es start`` and stops it at the end only if it started
it. ``es`` is a sync client; ``clean_es`` also wipes project-owned state first.

Two more nodes, started on first use and stopped at the end of the session, each in a
directory of its own that is removed afterwards:

- ``es_cluster``: a three-node cluster (indices get one replica there) from
  ``indexer.local_es.scratch.scratch_cluster``: on OTEL_AUDIT_ES_CLUSTER_URL, or on three
  consecutive free ports below the ephemeral range; ``cluster_es`` is a
  client of it, ``clean_cluster`` one after wiping project-owned state;
- ``secure_es``: a secured node (HTTPS with a CA made for it, the ``elastic`` password,
  file-realm users through ``secure_es.add_users``) on OTEL_AUDIT_ES_SECURE_URL, or a
  free port.

Under CI=true a skipped test is turned into a failure: CI must exercise everything.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

import pytest
from elasticsearch import Elasticsearch

from indexer.local_es import LocalElasticsearch
from indexer.local_es.scratch import free_port_run, scratch_cluster, scratch_node
from indexer.local_es.state import wipe_project_state

SECURE_HEAP = "384m"


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


@pytest.fixture(scope="session")
def es_cluster() -> Iterator[LocalElasticsearch]:
    """A three-node cluster of the local distribution for the session.

    ``es_cluster.urls`` lists every node; ``kill_node(i)`` and ``ensure_started()`` take a
    node away and bring it back (the drills do).
    """
    with scratch_cluster("otel-audit-cluster-") as cluster:
        yield cluster


@pytest.fixture
def cluster_es(es_cluster: LocalElasticsearch) -> Iterator[Elasticsearch]:
    """A sync client of the session's cluster (every node as a host)."""
    client = Elasticsearch(es_cluster.urls, request_timeout=30)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def clean_cluster(cluster_es: Elasticsearch) -> Elasticsearch:
    """The cluster's client, after deleting every project-owned index and template."""
    wipe_project_state(cluster_es)
    return cluster_es


@pytest.fixture(scope="session")
def secure_es() -> Iterator[LocalElasticsearch]:
    """A secured node for the session: HTTPS with its own CA, security on.

    ``secure_es.url`` is ``https://``; ``secure_es.security.ca_cert`` the CA file,
    ``ca_fingerprint()`` / ``node_fingerprint()`` its pins; ``elastic_password()`` the
    superuser's password; ``add_users([LocalUser(name, password, roles)], roles={...})``
    adds file-realm users and roles and waits until the node accepts them;
    ``client_options(user, password)`` the keyword arguments of a client. API keys cannot
    be created on this distribution (see indexer/local_es/README.md).
    """
    url = os.environ.get("OTEL_AUDIT_ES_SECURE_URL") or f"https://127.0.0.1:{free_port_run(1)}"
    with scratch_node(url, "otel-audit-secure-", heap=SECURE_HEAP) as node:
        yield node
