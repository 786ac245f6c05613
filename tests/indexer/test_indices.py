"""Index names: daily indices by the time the document carries."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from indexer.indices import event_index, rejected_index, span_index

T = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def test_daily_index_names() -> None:
    assert event_index(T) == "audit-events-2026.01.01"
    # The day boundaries, on both sides of the epoch, and the largest uint64 time.
    assert event_index(1_767_225_599_999_999_999) == "audit-events-2025.12.31"
    assert event_index(-1) == "audit-events-1969.12.31"
    assert event_index(0, prefix="x-") == "x-1970.01.01"
    assert rejected_index(T) == "audit-rejected-2026.01.01"
    assert span_index(T) == "audit-spans-2026.01.01"


@given(st.integers(min_value=-(2**40) * 10**9, max_value=2**64 - 1))
def test_event_index_is_the_utc_day_of_the_timestamp(ts_ns: int) -> None:
    expected = time.strftime("%Y.%m.%d", time.gmtime(ts_ns // 1_000_000_000))
    assert event_index(ts_ns) == "audit-events-" + expected
