"""Span retention against the real Elasticsearch: expired daily span indices go unless an
event they explain is still hot; events stay."""

from __future__ import annotations

from datetime import date

import pytest
from elasticsearch import Elasticsearch

from indexer.retention import plan_span_retention, run_span_retention
from indexer.templates import install_templates

pytestmark = pytest.mark.integration


def test_expired_span_indices_are_deleted_and_events_are_kept(
    es: Elasticsearch, clean_es: None
) -> None:
    install_templates(es)  # spans template records retention_days (7) in _meta
    today = date(2026, 11, 27)
    for day in ("2026.11.27", "2026.11.20", "2026.11.19", "2026.10.02", "2026.10.01", "2026.09.01"):
        es.indices.create(index=f"audit-spans-{day}")
    # Events of 2026.10.02 are still hot: their spans (that day's and the day before's,
    # for traces that began before midnight) stay, so their trace views keep working.
    es.indices.create(index="audit-events-2026.10.02")

    plan = plan_span_retention(es, today=today)
    assert {(a.index, a.action, a.retention_days) for a in plan} == {
        ("audit-spans-2026.11.27", "keep", 7),
        ("audit-spans-2026.11.20", "keep", 7),
        ("audit-spans-2026.11.19", "delete", 7),
        ("audit-spans-2026.10.02", "keep", 7),
        ("audit-spans-2026.10.01", "keep", 7),
        ("audit-spans-2026.09.01", "delete", 7),
    }
    dry = run_span_retention(es, dry_run=True, today=today)
    assert dry == plan
    assert es.indices.exists(index="audit-spans-2026.09.01")

    run_span_retention(es, today=today)
    assert not es.indices.exists(index="audit-spans-2026.09.01")
    assert not es.indices.exists(index="audit-spans-2026.11.19")
    assert es.indices.exists(index="audit-spans-2026.11.20")
    assert es.indices.exists(index="audit-spans-2026.10.01")
    assert es.indices.exists(index="audit-events-2026.10.02")

    # Once the events leave Elasticsearch, their spans follow.
    es.indices.delete(index="audit-events-2026.10.02")
    run_span_retention(es, today=today)
    assert not es.indices.exists(index="audit-spans-2026.10.01")
    assert not es.indices.exists(index="audit-spans-2026.10.02")
