"""The receiver's Prometheus metrics: one registry, every metric object defined here.

Every component of the receiver process imports its metrics from this module, so that
names, labels and help texts stay in one place and ``/metrics`` shows them all.

Who increments what:

- The OTLP servers: ``REQUESTS``, ``REQUEST_DURATION``, ``INFLIGHT_BYTES``,
  ``RECORDS_RECEIVED`` and ``RECORDS_ACCEPTED`` (from the consumer's
  :class:`~receiver.pipeline.IngestResult`; consumers must not count accepted records
  themselves, or they would be counted twice).
- ``RECORDS_REJECTED``: whoever rejects the record, with its reason. The servers use
  ``reason="invalid_id"`` for records whose trace or span id has the wrong length; the
  ingest pipeline uses the validator's rule name (``required``, ``enum`` ...) or its own
  words (``conflict``).
- The ingest pipeline: ``RECORDS_SPOOLED``, ``SPOOL_DEPTH_BYTES``, ``SPOOL_DEPTH_RECORDS``,
  ``BULK_DURATION``, ``BULK_DOCS``.
- The lifecycle schedule (``receiver/lifecycle.py``): ``LIFECYCLE_*``.
- The sealer: ``sealer_*``, read from its ``stats()`` at scrape time once the ingest
  pipeline registers it with :func:`observe_sealer`.
- The scheduled verify (``receiver/watch.py``): ``VERIFY_*``, ``SEALING_STUCK`` and
  ``WITNESS_SUBMISSIONS``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import (
    gc_collector as _gc,
)
from prometheus_client import (
    platform_collector as _platform,
)
from prometheus_client import (
    process_collector as _process,
)

__all__ = [
    "BULK_DOCS",
    "BULK_DURATION",
    "CONTENT_TYPE",
    "INFLIGHT_BYTES",
    "LIFECYCLE_ARCHIVED_BYTES",
    "LIFECYCLE_ARCHIVED_DAYS",
    "LIFECYCLE_ERRORS",
    "LIFECYCLE_LAST_RUN",
    "LIFECYCLE_OLDEST_HOT_DAY",
    "LIFECYCLE_RUNS",
    "RECORDS_ACCEPTED",
    "RECORDS_RECEIVED",
    "RECORDS_REJECTED",
    "RECORDS_SPOOLED",
    "REGISTRY",
    "REQUESTS",
    "REQUEST_DURATION",
    "SEALING_STUCK",
    "SPOOL_DEPTH_BYTES",
    "SPOOL_DEPTH_RECORDS",
    "VERIFY_DURATION",
    "VERIFY_EVENTS_CHECKED",
    "VERIFY_FINDINGS",
    "VERIFY_INCREMENTAL",
    "VERIFY_LAST_RUN",
    "VERIFY_OVERDUE",
    "VERIFY_RUNS",
    "VERIFY_STALE",
    "WITNESS_SUBMISSIONS",
    "observe_sealer",
    "render",
]

REGISTRY = CollectorRegistry(auto_describe=True)
"""The receiver's own registry (not the library default, so tests can import freely)."""

_process.ProcessCollector(registry=REGISTRY)
_platform.PlatformCollector(registry=REGISTRY)
_gc.GCCollector(registry=REGISTRY)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NS = "otel_audit_receiver"

# Latency buckets from 1 ms to 30 s: an export waits for a durable write.
_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

REQUESTS = Counter(
    "requests",
    "OTLP export requests answered, by transport, signal and answer code.",
    ["transport", "signal", "code"],
    namespace=_NS,
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "request_duration_seconds",
    "Time from a request's arrival to its answer.",
    ["transport", "signal"],
    namespace=_NS,
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
INFLIGHT_BYTES = Gauge(
    "inflight_bytes",
    "Request bytes (decompressed) currently held by requests being processed.",
    namespace=_NS,
    registry=REGISTRY,
)
RECORDS_RECEIVED = Counter(
    "records_received",
    "Log records or spans decoded from export requests.",
    ["signal"],
    namespace=_NS,
    registry=REGISTRY,
)
RECORDS_ACCEPTED = Counter(
    "records_accepted",
    "Records made durable and acknowledged (logs) or stored (traces).",
    ["signal"],
    namespace=_NS,
    registry=REGISTRY,
)
RECORDS_REJECTED = Counter(
    "records_rejected",
    "Records rejected in partial_success, by reason.",
    ["signal", "reason"],
    namespace=_NS,
    registry=REGISTRY,
)
RECORDS_SPOOLED = Counter(
    "records_spooled",
    "Records written to the local spool because Elasticsearch could not take them.",
    namespace=_NS,
    registry=REGISTRY,
)
SPOOL_DEPTH_BYTES = Gauge(
    "spool_depth_bytes",
    "Bytes waiting in the local spool.",
    namespace=_NS,
    registry=REGISTRY,
)
SPOOL_DEPTH_RECORDS = Gauge(
    "spool_depth_records",
    "Records waiting in the local spool.",
    namespace=_NS,
    registry=REGISTRY,
)
BULK_DURATION = Histogram(
    "bulk_duration_seconds",
    "Duration of one Elasticsearch bulk request.",
    namespace=_NS,
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
BULK_DOCS = Histogram(
    "bulk_docs",
    "Documents per Elasticsearch bulk request.",
    namespace=_NS,
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
    registry=REGISTRY,
)
LIFECYCLE_RUNS = Counter(
    "lifecycle_runs",
    "Lifecycle runs by this receiver, by outcome (ok, error).",
    ["outcome"],
    namespace=_NS,
    registry=REGISTRY,
)
LIFECYCLE_ERRORS = Counter(
    "lifecycle_errors",
    "Days (or whole runs) the lifecycle could not process.",
    namespace=_NS,
    registry=REGISTRY,
)
LIFECYCLE_LAST_RUN = Gauge(
    "lifecycle_last_run_timestamp_seconds",
    "When this receiver's last lifecycle run finished (Unix seconds).",
    namespace=_NS,
    registry=REGISTRY,
)
LIFECYCLE_ARCHIVED_DAYS = Gauge(
    "lifecycle_archived_days",
    "Days held only in the cold archive (removed from Elasticsearch).",
    namespace=_NS,
    registry=REGISTRY,
)
LIFECYCLE_ARCHIVED_BYTES = Gauge(
    "lifecycle_archived_bytes",
    "Bytes of archived event files in the cold store.",
    namespace=_NS,
    registry=REGISTRY,
)
LIFECYCLE_OLDEST_HOT_DAY = Gauge(
    "lifecycle_oldest_hot_day_timestamp_seconds",
    "Start of the oldest day still in Elasticsearch (Unix seconds, UTC).",
    namespace=_NS,
    registry=REGISTRY,
)

VERIFY_RUNS = Counter(
    "verify_runs",
    "Scheduled verify runs, by outcome (clean, findings, error).",
    ["outcome"],
    namespace=_NS,
    registry=REGISTRY,
)
VERIFY_LAST_RUN = Gauge(
    "verify_last_run_timestamp_seconds",
    "When the last scheduled verify run completed (Unix seconds).",
    namespace=_NS,
    registry=REGISTRY,
)
VERIFY_DURATION = Gauge(
    "verify_last_duration_seconds",
    "How long the last scheduled verify run took.",
    namespace=_NS,
    registry=REGISTRY,
)
VERIFY_EVENTS_CHECKED = Gauge(
    "verify_last_events_checked",
    "Events the last scheduled verify run checked.",
    namespace=_NS,
    registry=REGISTRY,
)
VERIFY_FINDINGS = Gauge(
    "verify_findings",
    "Findings of the last scheduled verify run, by kind (modified, missing, inserted...).",
    ["kind"],
    namespace=_NS,
    registry=REGISTRY,
)
VERIFY_STALE = Gauge(
    "verify_stale",
    "1 when the last scheduled verify run found a chain's newest checkpoint too old.",
    namespace=_NS,
    registry=REGISTRY,
)
VERIFY_OVERDUE = Gauge(
    "verify_overdue",
    "1 when no scheduled verify run completed within two intervals.",
    namespace=_NS,
    registry=REGISTRY,
)
VERIFY_INCREMENTAL = Gauge(
    "verify_last_incremental",
    "1 when the last scheduled verify run checked only what was added since the one before.",
    namespace=_NS,
    registry=REGISTRY,
)
SEALING_STUCK = Gauge(
    "sealing_stuck",
    "1 when the sealer reports stored events are not being sealed (integrity.stuck_after_s).",
    namespace=_NS,
    registry=REGISTRY,
)

WITNESS_SUBMISSIONS = Counter(
    "witness_submissions",
    "Checkpoints sent to witnesses, by outcome (cosigned, refused, error).",
    ["outcome"],
    namespace=_NS,
    registry=REGISTRY,
)


# name in the sealer's stats() -> (metric name, kind, help)
_SEALER_METRICS = {
    "pending_events": ("sealer_pending_events", "gauge", "Stored events not sealed yet."),
    "oldest_unsealed_age_s": (
        "sealer_oldest_unsealed_age_seconds",
        "gauge",
        "How long the oldest unsealed stored event has waited (0 when none).",
    ),
    "sealing_errors": (
        "sealer_errors",
        "counter",
        "Failed attempts to resume the chain or to seal a block (each retried).",
    ),
    "blocks_sealed": ("sealer_blocks", "counter", "Blocks sealed by this process."),
    "events_sealed": ("sealer_events", "counter", "Events sealed by this process."),
    "sweeper_backlog_events": (
        "sealer_sweeper_backlog_events",
        "gauge",
        "Stored events whose hand-off to the sealer failed, waiting for the sweeper.",
    ),
    "sweeper_passes": ("sealer_sweeper_passes", "counter", "Sweeper passes run."),
    "sweeper_events_found": (
        "sealer_sweeper_events",
        "counter",
        "Stored events the sweeper handed to the sealer without a client retry.",
    ),
    "intents_sealed": (
        "sealer_intents_sealed",
        "counter",
        "Events a crash left stored but not journaled, sealed from the intent log at start.",
    ),
    "intents_dropped": (
        "sealer_intents_dropped",
        "counter",
        "Intended events the intent log found never stored (the client was not acknowledged).",
    ),
    "intent_conflicts": (
        "sealer_intent_conflicts",
        "counter",
        "Intended events stored with another leaf than intended (left to verify).",
    ),
}


class _SealerCollector:
    def __init__(self) -> None:
        self.source: Callable[[], dict[str, float]] | None = None

    def describe(self) -> list[object]:
        return []

    def collect(self) -> Iterator[object]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        source = self.source
        if source is None:
            return
        values = source()
        for key, (name, kind, doc) in _SEALER_METRICS.items():
            if key not in values:
                continue
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(f"{_NS}_{name}", doc, value=values[key])


_SEALER = _SealerCollector()
REGISTRY.register(_SEALER)  # type: ignore[arg-type]  # the collector protocol


def observe_sealer(stats: Callable[[], dict[str, float]] | None) -> None:
    """Serve the sealer's ``stats()`` as ``sealer_*`` metrics (None: stop)."""
    _SEALER.source = stats


def render() -> bytes:
    """The registry in the Prometheus text format (what ``/metrics`` serves)."""
    return generate_latest(REGISTRY)
