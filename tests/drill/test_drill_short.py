"""The short drill of ``make test``: SIGKILLs of receivers and of the Collector, then
half-written Elasticsearch responses, through the real Collector into two receivers on the
three-node cluster. The full drills are ``make drill``."""

from __future__ import annotations

import pytest

from tests.drill.harness import format_row
from tests.drill.scenarios import DrillContext, drill_short

pytestmark = [pytest.mark.drill, pytest.mark.integration, pytest.mark.collector]


def test_short_drill_loses_and_duplicates_nothing(drill_context: DrillContext) -> None:
    row = drill_short(drill_context)
    print(format_row(row))
    assert row.acknowledged > 0
    # Every kill and cut really happened while events flowed.
    assert "3 receiver SIGKILLs, 1 Collector SIGKILLs" in row.notes
    assert "0 responses cut" not in row.notes
    assert row.lost == 0, format_row(row)
    assert row.duplicated == 0, format_row(row)
    assert "2 chains" in row.verify_summary
    assert row.verify_ok, row.verify_summary
