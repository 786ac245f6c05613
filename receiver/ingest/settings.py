"""The ingest pipeline's knobs: one frozen object, defaults shared with the receiver config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from receiver.config import ReceiverConfig

__all__ = ["IngestSettings"]


def _receiver_default(name: str) -> Any:
    # The receiver configuration holds the defaults of the keys it shares with these
    # settings; reading them here keeps one place for each default.
    return next(f.default for f in dataclasses.fields(ReceiverConfig) if f.name == name)


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """Knobs of the ingest pipeline; units in the names.

    Keys the receiver configuration also has take their defaults from it.
    """

    es_url: str = _receiver_default("es_url")
    """Elasticsearch base URL."""
    spool_dir: str = _receiver_default("spool_dir")
    """Directory of the local spool."""
    spool_max_bytes: int = _receiver_default("spool_max_bytes")
    """Spool size limit; when it is reached while ES is down, requests get Unavailable."""
    bulk_max_docs: int = _receiver_default("bulk_max_docs")
    """Documents per ``_bulk`` request at most (requests are coalesced up to this)."""
    bulk_max_bytes: int = _receiver_default("bulk_max_bytes")
    """Body bytes per ``_bulk`` request at most."""
    bulk_flush_interval_ms: float = _receiver_default("bulk_flush_interval_ms")
    """How long a batch waits for more documents from concurrent requests."""
    bulk_timeout_s: float = _receiver_default("bulk_timeout_s")
    """A ``_bulk`` slower than this counts as ES unavailable: the batch is spooled."""
    bulk_max_attempts: int = 5
    """Attempts per document on 429 / 5xx item answers before spooling it."""
    max_inflight_bulks: int = _receiver_default("max_inflight_bulks")
    """``_bulk`` requests in flight at once (the next batch fills while one is sent)."""
    retry_after_s: float = _receiver_default("retry_after_s")
    max_event_age_days: int = _receiver_default("max_event_age_days")
    """Refuse events older than this many days (bounds the daily indices); 0: no bound."""
    """Retry delay suggested to clients when neither ES nor the spool can take data."""
    shards: int = _receiver_default("shards")
    """Index template settings: primary shards, replicas, refresh interval."""
    replicas: str = _receiver_default("replicas")
    refresh_interval_s: float = _receiver_default("refresh_interval_s")
    wait_for_active_shards: str = _receiver_default("wait_for_active_shards")
    """Shard copies active before each ``_bulk`` is attempted."""
    replay_backoff_max_s: float = 5.0
    """Longest wait between replay attempts while ES stays unavailable."""

    def __post_init__(self) -> None:
        if not self.es_url.startswith(("http://", "https://")):
            raise ValueError(f"es_url: {self.es_url!r} must start with http:// or https://")
        for name in ("spool_max_bytes", "bulk_max_docs", "bulk_max_bytes", "max_inflight_bulks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        for name in ("bulk_timeout_s", "retry_after_s", "replay_backoff_max_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.max_event_age_days < 0:
            raise ValueError("max_event_age_days: must not be negative")
        if self.bulk_flush_interval_ms < 0:
            raise ValueError("bulk_flush_interval_ms: must not be negative")

    @classmethod
    def of(cls, config: Any) -> IngestSettings:
        """The settings of a configuration object: its attributes named like the fields
        (``es_url``, ``spool_dir`` ...); defaults for those it lacks."""
        defaults = cls()
        return cls(
            **{
                name: getattr(config, name, getattr(defaults, name))
                for name in cls.__dataclass_fields__
            }
        )
