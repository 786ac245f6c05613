"""The receiver watching itself: a scheduled ``verify`` and the sealer's watchdog in ``serve``.

With ``watch.enabled`` (the ``watch:`` section), ``serve`` runs
:func:`indexer.integrity.verify.verify` every ``interval_s`` in a worker thread, with the
receiver's own public key (plus ``lifecycle.public_key_paths``) and its checkpoint store.
Each run sets the ``verify_*`` metrics. ``/readyz`` turns unready
(:meth:`VerifySchedule.ready`) while

- the last completed run found tampering (any finding): an operator must look, and a load
  balancer should stop sending new events to a store that no longer verifies;
- the last completed run found a chain stale (its newest trusted checkpoint older than
  ``integrity.heartbeat_interval_s`` plus ``grace_s``, or ``stale_after_s``; what
  ``verify`` exits 4 for); or
- sealing is stuck, as the sealer itself reports it (:meth:`Sealer.stuck`: refused chain,
  dead seal loop, events unsealed longer than ``integrity.stuck_after_s``).

The first run (without saved state, below) reads everything stored. While the store holds
one chain, the runs after a clean run are incremental: they read only what was written
since, by Elasticsearch's own per-shard sequence numbers (:mod:`indexer.integrity.changes`),
which no writer can skip.
Each run first notes the chain's newest external checkpoint, makes the events written
until then searchable, and records every shard's highest ``_seq_no`` and document count
(the watermark). After a clean run, the next one

- reads the event documents written above the watermark (new events, a forged insert of
  any date, the new version of an edited event) and classifies them with the verifier's
  pure core, as ``verify --since`` that checkpoint: the blocks after it must extend it,
  each event they seal must match its leaf, one no trusted block covers is pending and
  then inserted;
- runs a full verify instead, in the same run, when a document at or below the watermark
  was deleted or rewritten (a shard's count below it changed), an index was replaced or
  vanished or left the read alias, or an old ``audit-blocks`` record changed.

So an edit, insert or delete of any event, of any age, is reported by the next run, and a
run that finds nothing changed costs one small request per shard. After
``full_every - 1`` incremental runs a run reads everything again, the deep re-check. Each
run waits at most ``max_wait_s`` for the sealing deadline of events stored just before
it; while some stay pending, the watermark and checkpoint are kept, so the next run reads
them again, and one still uncovered the sealing deadline after the run that first found
it pending ended is ``inserted``.

The mark, the checkpoint and the number of incremental runs since the last full one are
kept in ``integrity.state_dir/watch-state.json`` (the verifier's own state,
like the saved checkpoint of ``verify --since``): a restarted receiver goes on from them;
without that file (or with one whose checkpoint does not verify) the first run is full.

With ``watch.witness_urls`` (and their ``watch.witness_keys``), each run then sends the
newest checkpoint to those witnesses and stores their cosignatures beside it
(:func:`indexer.integrity.witness_cli.submit_chain`).

``verify_overdue`` is 1 when no run has completed within two intervals (verify keeps
failing, or takes longer than the schedule allows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from elasticsearch import exceptions as es_exc

from otel_audit.integrity import CheckpointStatus, verify_checkpoint
from otel_audit.integrity.errors import IntegrityError
from otel_audit.integrity.note import CosignatureVerifier, parse_vkey
from receiver import metrics

__all__ = ["STATE_FILE", "VerifySchedule", "WatchConfig"]

STATE_FILE = "watch-state.json"
"""In ``integrity.state_dir``: the last clean run's mark and checkpoint, so a restarted
receiver goes on with incremental runs."""

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
    max_wait_s: float = 2.0
    """Wait at most this long in a run for events stored just before it to be sealed."""
    full_every: int = 12
    """A full run, then up to this many minus one incremental runs, and so on (1: all full)."""
    stale_after_s: float = 0.0
    """A chain whose newest trusted checkpoint is older is stale (0: the default of
    ``verify``, ``integrity.heartbeat_interval_s + grace_s``)."""
    witness_urls: tuple[str, ...] = ()
    """Witnesses (``otel-audit witness serve``) to send the newest checkpoint to after
    each run; their cosigned notes are stored beside the checkpoints."""
    witness_keys: tuple[str, ...] = ()
    """The verifier key (vkey) of each witness in ``witness_urls``, in the same order."""

    def validate(self) -> None:
        if self.interval_s <= 0:
            raise ValueError("watch.interval_s must be positive")
        if self.full_every < 1:
            raise ValueError("watch.full_every must be at least 1")
        for name in ("first_delay_s", "grace_s", "max_wait_s", "stale_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"watch.{name} must not be negative")
        if len(self.witness_urls) != len(self.witness_keys):
            raise ValueError("watch.witness_keys needs one vkey per watch.witness_urls entry")
        for vkey in self.witness_keys:
            try:
                verifier = parse_vkey(vkey)
            except IntegrityError as exc:
                raise ValueError(f"watch.witness_keys: {exc}") from exc
            if not isinstance(verifier, CosignatureVerifier):
                raise ValueError(f"watch.witness_keys: {verifier.name} is not a witness key")


def _anchor_freshness(report: Any, since: Any, options: Any) -> None:
    """An incremental run that found no newer trusted checkpoint judges freshness by the
    one it started from (verified by an earlier run), as a full run would."""
    if since.origin in report.anchors or since.origin in report.stale:
        return
    limit_ms = options.stale_ms()
    age_ms = int(options.clock() * 1000) - since.timestamp_ms
    if limit_ms > 0 and age_ms > limit_ms:
        report.stale[since.origin] = (
            f"newest trusted checkpoint (sequence {since.sequence}) was signed "
            f"{age_ms / 1000:.0f} s ago, more than the {limit_ms / 1000:.0f} s a live "
            "receiver's heartbeat allows: newer data may have been cut off"
        )


@dataclass(frozen=True, slots=True)
class _Run:
    report: Any
    incremental: bool
    changes: Any
    """What :func:`indexer.integrity.changes.read_changes` found when the run began."""
    head: Any
    """The chain's newest external checkpoint when the run began (signature checked)."""


def _newest_checkpoint(store: Any, chain: str) -> Any:
    from otel_audit.integrity import Checkpoint

    latest = getattr(store, "latest", None)
    if latest is not None:
        return latest(chain)
    newest = None
    for item in store.read(chain):
        if isinstance(item, Checkpoint):
            newest = item
    return newest


class VerifySchedule:
    """Runs verify every ``interval_s``; ``start()``, ``ready()``, ``shutdown()``."""

    def __init__(
        self,
        config: Any,
        stuck_probe: Callable[[], tuple[bool, str]] | None = None,
        *,
        clock: Any = time.monotonic,
    ) -> None:
        self.config = config
        self.watch: WatchConfig = config.section("watch", WatchConfig)
        self.stuck_probe = stuck_probe
        """The sealer's own probe (``server.sealing_stuck``): ``(stuck, why)``."""
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.last_findings: dict[str, int] | None = None
        self.last_stale: dict[str, str] = {}
        self.last_completed: float | None = None
        self._started_at = clock()
        self._kinds_seen: set[str] = set()
        self._incremental_in_row = 0
        self._anchor: Any = None
        """The chain's newest checkpoint when the last clean run began (one chain), or None."""
        self._watermark: Any = None
        """The store's sequence numbers when the last clean run began (with ``_anchor``)."""
        self._stuck = False
        self._pending_seen: dict[str, float] = {}
        """Event id -> when a run that found it pending ended (this verifier's clock)."""
        self._state_path: Path | None = None
        """``<integrity.state_dir>/watch-state.json``: mark, checkpoint, runs since full."""

    def start(self) -> None:
        """Start the schedule when ``watch.enabled`` and the events go to Elasticsearch."""
        if self.watch.enabled and self.config.consumer == "ingest" and self._task is None:
            self._started_at = self._clock()
            self._task = asyncio.create_task(self._loop(), name="watch")

    # -- readiness -------------------------------------------------------------------

    def sealing_stuck(self) -> bool:
        """The sealer says stored events are not being sealed (its :meth:`stuck`)."""
        if self.stuck_probe is None:
            return False
        stuck, why = self.stuck_probe()
        metrics.SEALING_STUCK.set(1 if stuck else 0)
        if stuck and not self._stuck:
            _log.error("sealing stuck", extra={"why": why})
        self._stuck = bool(stuck)
        return self._stuck

    def tampered(self) -> bool:
        """The last completed verify run had findings."""
        return bool(self.last_findings)

    def stale(self) -> bool:
        """The last completed verify run found a chain stale (``verify`` exit 4)."""
        return bool(self.last_stale)

    def overdue(self) -> bool:
        """No verify run completed within two intervals."""
        if self._task is None:
            return False
        since = self.last_completed if self.last_completed is not None else self._started_at
        bound = 2 * self.watch.interval_s + self.watch.first_delay_s
        return bool(self._clock() - since > bound)

    def ready(self) -> bool:
        """False while tampering was found, a chain is stale or sealing is stuck (for
        ``/readyz``)."""
        if not self.watch.enabled:
            return True
        metrics.VERIFY_OVERDUE.set(1 if self.overdue() else 0)
        return not self.tampered() and not self.stale() and not self.sealing_stuck()

    # -- runs ------------------------------------------------------------------------

    def _since(self, store: Any) -> Any:
        """The checkpoint this run may start from, or None for a full run."""
        anchor = self._anchor
        if (
            anchor is None
            or self._watermark is None
            or self._incremental_in_row >= self.watch.full_every - 1
        ):
            return None
        # Incremental runs read the events stored after the checkpoint, whatever their
        # chain: with a second chain its events would look uncovered, so read everything.
        return anchor if store.chains() == [anchor.origin] else None

    def _snapshot(self, es: Any, store: Any, since: Any) -> tuple[Any, Any]:
        """The chain's newest external checkpoint, then the store's watermark.

        Every event a block up to that checkpoint seals was stored before the checkpoint
        was written; the refresh makes those searchable, so the watermark is above them and
        the next run's documents above it are sealed, if at all, by later blocks only.
        """
        from indexer.indices import EVENTS_PATTERN
        from indexer.integrity.changes import read_changes

        chains = store.chains()
        head = _newest_checkpoint(store, chains[0]) if len(chains) == 1 else None
        try:
            resp = es.indices.refresh(
                index=EVENTS_PATTERN, allow_no_indices=True, ignore_unavailable=True
            )
            refreshed = int(resp["_shards"]["successful"]) > 0
        except es_exc.AuthorizationException:
            refreshed = False
        if not refreshed:
            # A role without refresh (a wildcard then resolves to no index, or is refused):
            # the indices' own periodic refresh makes them searchable meanwhile.
            time.sleep(float(getattr(self.config, "refresh_interval_s", 1.0)) + 0.5)
        changes = read_changes(es, self._watermark if since is not None else None)
        return head, changes

    def _load_state(self, state_dir: str, keyring: Any) -> None:
        """The mark and checkpoint a clean run before a restart recorded, if any."""
        from indexer.integrity.changes import Watermark
        from otel_audit.integrity import Checkpoint, CheckpointFormatError

        path = self._state_path = Path(state_dir) / STATE_FILE
        try:
            data = orjson.loads(path.read_bytes())
            anchor = Checkpoint.from_json_dict(data["checkpoint"])
            watermark = Watermark.from_json_dict(data["watermark"])
            in_row = int(data["incremental_in_row"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, CheckpointFormatError) as exc:
            _log.warning("watch state unreadable: full verify", extra={"error": str(exc)[:500]})
            return
        if verify_checkpoint(anchor, keyring) is not CheckpointStatus.OK:
            _log.warning("watch state checkpoint does not verify: full verify")
            return
        self._anchor, self._watermark, self._incremental_in_row = anchor, watermark, in_row

    def _settle_pending(self, report: Any, deadline_s: float) -> None:
        """Pending events an earlier run already read are ``inserted`` once the sealing
        deadline has passed since that run ended.

        A run counts the deadline from its own start and waits at most ``max_wait_s``, so
        with a deadline longer than that, an event no block covers would be pending in
        every run. This verifier's clock saw it stored when the earlier run ended.
        """
        from indexer.integrity.classify import Finding, FindingKind

        now = time.time()
        seen = self._pending_seen
        for eid, index in list(report.pending.items()):
            first = seen.get(eid)
            if first is None or now - first < deadline_s:
                continue
            del report.pending[eid]
            report.findings.append(
                Finding(
                    FindingKind.INSERTED,
                    "event is not covered by any trusted block within the sealing deadline "
                    f"(uncovered since a scheduled run {now - first:.0f} s ago)",
                    event_id=eid,
                    index=index,
                )
            )
        report.events_pending = len(report.pending)
        self._pending_seen = {e: seen.get(e, now) for e in report.pending}

    def _save_state(self) -> None:
        from indexer.state_files import write_atomic

        path = self._state_path
        if path is None:
            return
        try:
            if self._anchor is None or self._watermark is None:
                path.unlink(missing_ok=True)
                return
            data = {
                "checkpoint": self._anchor.to_json_dict(),
                "watermark": self._watermark.to_json_dict(),
                "incremental_in_row": self._incremental_in_row,
            }
            write_atomic(path, orjson.dumps(data))
        except OSError as exc:
            _log.warning("watch state not saved", extra={"error": str(exc)[:500]})
            raise

    def _run_sync(self) -> _Run:
        from indexer.es_client import EsConnection, sync_client
        from indexer.integrity.checkpoint_store import open_checkpoint_store
        from indexer.integrity.verify import VerifyOptions, verify
        from indexer.lifecycle.verify_archive import PolicyDeletions
        from receiver.lifecycle import integrity_config_of, keyring_of

        integrity = integrity_config_of(self.config)
        keyring = keyring_of(self.config)
        if self._state_path is None:
            self._load_state(integrity.state_dir, keyring)
        store = open_checkpoint_store(integrity.checkpoint_dir)
        es = sync_client(EsConnection.from_config(self.config), request_timeout=120)
        try:
            since = self._since(store)
            head, changes = self._snapshot(es, store, since)
            if since is not None and changes.escalate:
                _log.warning(
                    "store changed beyond new writes: full verify",
                    extra={"why": changes.escalate[:20]},
                )
                since = None
            options = VerifyOptions(
                grace_s=self.watch.grace_s,
                seal_interval_s=integrity.block_max_interval_ms / 1000,
                heartbeat_s=integrity.heartbeat_interval_s,
                stale_after_s=self.watch.stale_after_s or None,
                max_wait_s=self.watch.max_wait_s,
                since=since,
                processes=False,
                event_pages=(lambda: changes.pages) if since is not None else None,
            )
            # Indices the lifecycle policy removed (signed records) are archived, not missing.
            options.policy_deletions = PolicyDeletions.from_elasticsearch(es, keyring)
            report = verify(es, keyring, store, options)
            self._settle_pending(report, options.deadline_ms() / 1000)
            if since is not None:
                _anchor_freshness(report, since, options)
            if self.watch.witness_urls:
                self._submit_to_witnesses(es, Path(integrity.checkpoint_dir), keyring)
            if head is not None and verify_checkpoint(head, keyring) is not CheckpointStatus.OK:
                head = None
            return _Run(report, since is not None, changes, head)
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
        run = await asyncio.to_thread(self._run_sync)
        report, incremental, changes = run.report, run.incremental, run.changes
        self._incremental_in_row = self._incremental_in_row + 1 if incremental else 0
        duration = time.monotonic() - started
        counts: dict[str, int] = report.counts()
        self.last_findings = counts
        self.last_stale = dict(report.stale)
        self.last_completed = self._clock()
        newest = next(iter(report.anchors.values())) if len(report.anchors) == 1 else None
        if not counts and not report.pending and newest is not None:
            head = run.head
            usable = (
                head is not None
                and head.origin == newest.origin
                and head.sequence <= newest.sequence
            )
            self._anchor = head if usable else None
            self._watermark = changes.watermark if usable else None
        elif counts or newest is None:
            self._anchor = self._watermark = None  # the next run reads everything
        with contextlib.suppress(OSError):  # logged; the next clean run writes it again
            await asyncio.to_thread(self._save_state)
        metrics.VERIFY_RUNS.labels(outcome="findings" if counts else "clean").inc()
        metrics.VERIFY_INCREMENTAL.set(1 if incremental else 0)
        metrics.VERIFY_STALE.set(1 if report.stale else 0)
        metrics.VERIFY_LAST_RUN.set(time.time())
        metrics.VERIFY_DURATION.set(duration)
        metrics.VERIFY_EVENTS_CHECKED.set(report.events_checked)
        for kind in set(counts) | set(self._kinds_seen):
            metrics.VERIFY_FINDINGS.labels(kind=kind).set(counts.get(kind, 0))
        self._kinds_seen.update(counts)
        metrics.VERIFY_OVERDUE.set(0)
        level = logging.ERROR if counts or report.stale else logging.INFO
        message = "tampering detected" if counts else "chain stale" if report.stale else ""
        _log.log(
            level,
            message or "verify clean",
            extra={
                "findings": counts,
                "stale": report.stale,
                "incremental": incremental,
                "changes_fetched": changes.fetched,
                "escalated": changes.escalate[:5],
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
            metrics.VERIFY_OVERDUE.set(1 if self.overdue() else 0)
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
