"""The receiver watching itself: a scheduled ``verify`` and a sealing watchdog inside ``serve``.

With ``watch.enabled`` (the ``watch:`` section), ``serve`` runs
:func:`indexer.integrity.verify.verify` every ``interval_s`` in a worker thread, with the
receiver's own public key (plus ``lifecycle.public_key_paths``) and its checkpoint store,
over everything stored. Each run sets the ``verify_*`` metrics. ``/readyz`` turns unready
(:meth:`VerifySchedule.ready`) while

- the last completed run found tampering (any finding): an operator must look, and a load
  balancer should stop sending new events to a store that no longer verifies; or
- sealing is stuck: events are waiting to be sealed and the chain's tree has not grown for
  ``sealing_stuck_after_s`` (the sealer cannot write blocks or checkpoints).

With ``watch.witness_urls`` (and their ``watch.witness_keys``), each run then sends the
newest checkpoint to those witnesses and stores their cosignatures beside it
(:func:`indexer.integrity.witness_cli.submit_chain`).

``verify_stale`` is 1 when no run has completed within two intervals (verify keeps
failing, or takes longer than the schedule allows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otel_audit.integrity.errors import IntegrityError
from otel_audit.integrity.note import CosignatureVerifier, parse_vkey
from receiver import metrics

__all__ = ["VerifySchedule", "WatchConfig"]

_log = logging.getLogger("otel_audit.watch")


@dataclass(frozen=True)
class WatchConfig:
    """The scheduled verify and the sealing watchdog; one comment per field."""

    enabled: bool = False
    """Run verify on a schedule inside ``serve`` and report it in metrics and ``/readyz``."""
    interval_s: float = 300.0
    """Seconds between the end of one verify run and the start of the next."""
    first_delay_s: float = 10.0
    """Seconds after start before the first run."""
    grace_s: float = 5.0
    """As ``verify --grace-s``: events this close to the newest checkpoint are pending."""
    sealing_stuck_after_s: float = 120.0
    """Events pending while the chain has not grown for this long means sealing is stuck."""
    witness_urls: tuple[str, ...] = ()
    """Witnesses (``otel-audit witness serve``) to send the newest checkpoint to after
    each run; their cosigned notes are stored beside the checkpoints."""
    witness_keys: tuple[str, ...] = ()
    """The verifier key (vkey) of each witness in ``witness_urls``, in the same order."""

    def validate(self) -> None:
        for name in ("interval_s", "sealing_stuck_after_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"watch.{name} must be positive")
        if self.first_delay_s < 0 or self.grace_s < 0:
            raise ValueError("watch.first_delay_s and watch.grace_s must not be negative")
        if len(self.witness_urls) != len(self.witness_keys):
            raise ValueError("watch.witness_keys needs one vkey per watch.witness_urls entry")
        for vkey in self.witness_keys:
            try:
                verifier = parse_vkey(vkey)
            except IntegrityError as exc:
                raise ValueError(f"watch.witness_keys: {exc}") from exc
            if not isinstance(verifier, CosignatureVerifier):
                raise ValueError(f"watch.witness_keys: {verifier.name} is not a witness key")


class VerifySchedule:
    """Runs verify every ``interval_s``; ``start()``, ``ready()``, ``shutdown()``."""

    def __init__(self, config: Any, sealer: Any = None, *, clock: Any = time.monotonic) -> None:
        self.config = config
        self.watch: WatchConfig = config.section("watch", WatchConfig)
        self.sealer = sealer
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.last_findings: dict[str, int] | None = None
        self.last_completed: float | None = None
        self._started_at = clock()
        self._tree_size = -1
        self._tree_changed = clock()
        self._kinds_seen: set[str] = set()

    def start(self) -> None:
        """Start the schedule when ``watch.enabled`` and the events go to Elasticsearch."""
        if self.watch.enabled and self.config.consumer == "ingest" and self._task is None:
            self._started_at = self._clock()
            self._task = asyncio.create_task(self._loop(), name="watch")

    # -- readiness -------------------------------------------------------------------

    def sealing_stuck(self) -> bool:
        """Events wait to be sealed and the chain has not grown for the configured bound."""
        sealer = self.sealer
        if sealer is None:
            return False
        now = self._clock()
        try:
            size = int(sealer.state.tree_size)
            pending = int(sealer.pending_count)
        except (RuntimeError, AttributeError):  # not started yet
            return False
        if size != self._tree_size:
            self._tree_size = size
            self._tree_changed = now
        stuck = pending > 0 and now - self._tree_changed > self.watch.sealing_stuck_after_s
        metrics.SEALING_STUCK.set(1 if stuck else 0)
        return stuck

    def tampered(self) -> bool:
        """The last completed verify run had findings."""
        return bool(self.last_findings)

    def stale(self) -> bool:
        """No verify run completed within two intervals."""
        if self._task is None:
            return False
        since = self.last_completed if self.last_completed is not None else self._started_at
        bound = 2 * self.watch.interval_s + self.watch.first_delay_s
        return bool(self._clock() - since > bound)

    def ready(self) -> bool:
        """False while tampering was found or sealing is stuck (for ``/readyz``)."""
        if not self.watch.enabled:
            return True
        metrics.VERIFY_STALE.set(1 if self.stale() else 0)
        return not self.tampered() and not self.sealing_stuck()

    # -- runs ------------------------------------------------------------------------

    def _run_sync(self) -> Any:
        from indexer.es_client import EsConnection, sync_client
        from indexer.integrity.checkpoint_store import open_checkpoint_store
        from indexer.integrity.verify import VerifyOptions, verify
        from receiver.lifecycle import integrity_config_of, keyring_of

        integrity = integrity_config_of(self.config)
        keyring = keyring_of(self.config)
        store = open_checkpoint_store(integrity.checkpoint_dir)
        es = sync_client(EsConnection.from_config(self.config), request_timeout=120)
        try:
            options = VerifyOptions(grace_s=self.watch.grace_s, processes=False)
            report = verify(es, keyring, store, options)
            if self.watch.witness_urls:
                self._submit_to_witnesses(es, Path(integrity.checkpoint_dir), keyring)
            return report
        finally:
            es.close()

    def _submit_to_witnesses(self, es: Any, root: Path, keyring: Any) -> None:
        from indexer.integrity.checkpoint_store import DirectoryCheckpointStore
        from indexer.integrity.witness_cli import submit_chain

        if not root.is_dir():
            return
        for url, vkey in zip(self.watch.witness_urls, self.watch.witness_keys, strict=True):
            verifier = parse_vkey(vkey)
            assert isinstance(verifier, CosignatureVerifier)  # checked by validate()
            for chain in DirectoryCheckpointStore(root).chains():
                try:
                    entry = submit_chain(es, root, chain, keyring, url, verifier)
                except Exception as exc:  # one witness down must not stop the others
                    metrics.WITNESS_SUBMISSIONS.labels(outcome="error").inc()
                    _log.warning(
                        "witness submission failed",
                        extra={"witness": url, "chain_id": chain, "error": str(exc)[:500]},
                    )
                    continue
                if entry is None:
                    continue
                cosigned = entry["status"] == 200
                metrics.WITNESS_SUBMISSIONS.labels(
                    outcome="cosigned" if cosigned else "refused"
                ).inc()
                _log.log(
                    logging.INFO if cosigned else logging.ERROR,
                    "checkpoint cosigned" if cosigned else "witness refused the checkpoint",
                    extra={"witness": url, **entry},
                )

    async def run_once(self) -> dict[str, int]:
        """One verify run now (in a worker thread); the findings by kind."""
        started = time.monotonic()
        report = await asyncio.to_thread(self._run_sync)
        duration = time.monotonic() - started
        counts: dict[str, int] = report.counts()
        self.last_findings = counts
        self.last_completed = self._clock()
        metrics.VERIFY_RUNS.labels(outcome="findings" if counts else "clean").inc()
        metrics.VERIFY_LAST_RUN.set(time.time())
        metrics.VERIFY_DURATION.set(duration)
        metrics.VERIFY_EVENTS_CHECKED.set(report.events_checked)
        for kind in set(counts) | set(self._kinds_seen):
            metrics.VERIFY_FINDINGS.labels(kind=kind).set(counts.get(kind, 0))
        self._kinds_seen.update(counts)
        metrics.VERIFY_STALE.set(0)
        level = logging.ERROR if counts else logging.INFO
        _log.log(
            level,
            "tampering detected" if counts else "verify clean",
            extra={
                "findings": counts,
                "events_checked": report.events_checked,
                "events_pending": report.events_pending,
                "duration_s": round(duration, 3),
                "first": [f.to_json_dict() for f in report.findings[:5]],
            },
        )
        return counts

    async def _pause(self, delay_s: float) -> bool:
        """Wait ``delay_s``, refreshing the watchdog metrics each second; True on stop."""
        deadline = time.monotonic() + delay_s
        while True:
            self.sealing_stuck()
            metrics.VERIFY_STALE.set(1 if self.stale() else 0)
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=min(1.0, left))
                return True
            except TimeoutError:
                pass

    async def _loop(self) -> None:
        delay = self.watch.first_delay_s
        while not self._stop.is_set():
            if await self._pause(delay):
                return
            try:
                await self.run_once()
            except Exception as exc:  # the next run tries again; never kill the receiver
                metrics.VERIFY_RUNS.labels(outcome="error").inc()
                _log.exception("scheduled verify failed", extra={"error": str(exc)[:500]})
            delay = self.watch.interval_s

    async def shutdown(self) -> None:
        """Stop the schedule (a run in progress finishes in its thread)."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
