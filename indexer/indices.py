"""Every Elasticsearch name this project owns: indices, patterns, aliases, templates.

One table, so that the writers, the query API, verify, Kibana's data views and the test
wipe all agree, and an operator can read in one place what the project creates.

====================  ==============================  ===============================
data                  concrete indices                read through
====================  ==============================  ===============================
audit events          ``audit-events-YYYY.MM.DD``     alias ``audit-events``
dead letters          ``audit-rejected-YYYY.MM.DD``   alias ``audit-rejected``
spans                 ``audit-spans-YYYY.MM.DD``      alias ``audit-spans``
block records         ``audit-blocks``                (the index itself)
lifecycle             ``audit-lifecycle``             (the index itself: lease, records)
chain leases          ``audit-chain-leases``          (the index itself: one per chain)
====================  ==============================  ===============================

Daily indices are chosen by a time the document carries (for an event the time embedded in
its UUIDv7 event id, else its own timestamp; the receive time of a dead letter, a span's
start), so a retry lands in the same index and a ``409`` there means "already stored"; the
same UUIDv7 id sent with another day's timestamp meets its first copy there too (the
schema accepts no other emitted id; a derived id hashes the time with the content). The
receiver refuses events whose day is older than ``max_event_age_days`` or beyond the
schema's ``max_future_s``. Index templates are named ``otel-audit-<name>``.
"""

from __future__ import annotations

import functools
import time

__all__ = [
    "BLOCKS_INDEX",
    "BLOCKS_TEMPLATE",
    "CHAIN_LEASES_INDEX",
    "EVENTS_ALIAS",
    "EVENTS_INDEX_PREFIX",
    "EVENTS_PATTERN",
    "EVENTS_TEMPLATE",
    "LIFECYCLE_INDEX",
    "PROJECT_INDEX_PATTERNS",
    "PROJECT_SNAPSHOT_REPOSITORIES",
    "PROJECT_TEMPLATES",
    "REJECTED_ALIAS",
    "REJECTED_INDEX_PREFIX",
    "REJECTED_PATTERN",
    "REJECTED_TEMPLATE",
    "SPANS_ALIAS",
    "SPANS_INDEX_PREFIX",
    "SPANS_PATTERN",
    "SPANS_TEMPLATE",
    "TEMPLATE_PREFIX",
    "daily_index",
    "event_index",
    "rejected_index",
    "span_index",
]

EVENTS_INDEX_PREFIX = "audit-events-"
EVENTS_PATTERN = EVENTS_INDEX_PREFIX + "*"
EVENTS_ALIAS = "audit-events"

REJECTED_INDEX_PREFIX = "audit-rejected-"
REJECTED_PATTERN = REJECTED_INDEX_PREFIX + "*"
REJECTED_ALIAS = "audit-rejected"

SPANS_INDEX_PREFIX = "audit-spans-"
SPANS_PATTERN = SPANS_INDEX_PREFIX + "*"
SPANS_ALIAS = "audit-spans"

BLOCKS_INDEX = "audit-blocks"
LIFECYCLE_INDEX = "audit-lifecycle"
CHAIN_LEASES_INDEX = "audit-chain-leases"

TEMPLATE_PREFIX = "otel-audit-"
EVENTS_TEMPLATE = TEMPLATE_PREFIX + "events"
REJECTED_TEMPLATE = TEMPLATE_PREFIX + "rejected"
SPANS_TEMPLATE = TEMPLATE_PREFIX + "spans"
BLOCKS_TEMPLATE = TEMPLATE_PREFIX + "blocks"

PROJECT_INDEX_PATTERNS = ("audit-*", ".audit-*", "otel-audit-*")
"""Every index the project may create (the test wipe deletes these, nothing else)."""
PROJECT_TEMPLATES = "otel-audit*"
"""Every index and component template the project may install."""
PROJECT_SNAPSHOT_REPOSITORIES = "otel-audit*"
"""Every snapshot repository the project may register."""

_NS_PER_DAY = 86_400 * 1_000_000_000


def daily_index(prefix: str, ts_ns: int) -> str:
    """``prefix`` + the UTC day of ``ts_ns`` as ``YYYY.MM.DD``."""
    return prefix + _day_suffix(ts_ns // _NS_PER_DAY)


@functools.lru_cache(maxsize=256)
def _day_suffix(day: int) -> str:
    # A batch's documents fall on one or two days: strftime once per day, not per document.
    return time.strftime("%Y.%m.%d", time.gmtime(day * 86_400))


def event_index(ts_ns: int, prefix: str = EVENTS_INDEX_PREFIX) -> str:
    """The daily index chosen by the event's own timestamp, so retries land in the same one."""
    return daily_index(prefix, ts_ns)


def rejected_index(received_ns: int) -> str:
    """The daily dead-letter index for a receive time."""
    return daily_index(REJECTED_INDEX_PREFIX, received_ns)


def span_index(start_ns: int, prefix: str = SPANS_INDEX_PREFIX) -> str:
    """The daily index of a span, by its start time."""
    return daily_index(prefix, start_ns)
