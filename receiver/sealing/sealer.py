"""The sealer: groups durably stored events into signed Merkle blocks behind the ack.

::

    ingest write path --on_durable(stored)--> leaf hashes -> journal -> pending
                                                                             |
    seal loop: block_max_events reached or oldest pending older than block_max_interval_ms
      -> extend the chain's compact range, sign the checkpoint (root over the whole chain)
      -> create the block record in audit-blocks (op_type=create, _id chain:sequence)
      -> append the checkpoint to the external checkpoint store
      -> advance state.json past the sealed journal entries
    idle for heartbeat_interval_s -> a heartbeat checkpoint (same tree size, new time)

Crash safety: before a write is sent, its events are logged as intended (``on_intent``,
fsynced); an event confirmed by Elasticsearch is journaled before the client gets its
answer, so after a crash it is in a block, in the journal, or in an intent file, which the
next start resolves with ``mget`` (stored with the intended leaf: sealed; absent: dropped;
another leaf: a logged conflict). On start the
sealer reads ``audit-blocks`` for records of its chain newer than ``state.json`` (a crash
between writing a block and saving the state) and adopts them, skipping the journal
entries they sealed; everything else in the journal is sealed again, in order. A block
write that answers 409 is compared with the record already stored: the same one is
success, another is an error (never overwritten).

Exactly once: the journal only receives events this write created, plus re-confirmed
duplicates (a client retry after a crash) that are neither pending nor found in
``audit-blocks`` nor in a block sealed in the last few seconds (not yet searchable).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from elastic_transport import TransportError
from elasticsearch import AsyncElasticsearch
from elasticsearch import exceptions as es_exc

from indexer.indices import BLOCKS_INDEX, CHAIN_LEASES_INDEX
from indexer.integrity.blocks import (
    ID_KEYS_MAPPING,
    KIND_BLOCK,
    KIND_HEARTBEAT,
    BlockRecord,
    find_holding,
    merge_time_range,
)
from indexer.integrity.checkpoint_store import open_checkpoint_store
from otel_audit.integrity import (
    PRIVATE_KEY_FILENAME,
    CheckpointFormatError,
    CheckpointStatus,
    CompactRange,
    Ed25519PrivateKey,
    IntegrityError,
    KeyFormatError,
    Keyring,
    generate_private_key,
    key_id,
    leaf_hash_of_event,
    load_private_key,
    load_private_key_from_env,
    make_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
    write_key_pair,
)
from otel_audit.integrity.store import CheckpointStore
from receiver.sealing.config import IntegrityConfig
from receiver.sealing.lease import ChainInUse, ChainLease
from receiver.sealing.state import ChainState, Entries, IntentLog, Journal, Pending, StateDir
from receiver.waiting import wait_event

__all__ = ["ChainInUse", "ChainRefused", "Sealer", "build_sealer", "load_signing_key"]

_log = logging.getLogger("otel_audit.receiver.sealer")

# Blocks sealed this recently may not be searchable yet (refresh interval): their ids
# are kept in memory for the duplicate check.
_RECENT_S = 10.0
_RETRY_MAX_S = 5.0
# Stored events whose hand-off failed, kept for the sweeper; one pass takes this many.
_BACKLOG_MAX_EVENTS = 200_000
_SWEEP_BATCH = 20_000
# Intents are read back from Elasticsearch this many ids per mget.
_MGET_CHUNK = 1000


class ChainRefused(RuntimeError):
    """``audit-blocks`` holds a record of this chain that the sealer will not build on.

    Raised at start (the receiver then refuses to start); the message names the record
    and says why. See docs/integrity.md, "The sealer refuses to start".
    """

    def __init__(self, index: str, doc_id: str, sequence: object, why: str) -> None:
        self.index = index
        self.doc_id = doc_id
        self.sequence = sequence
        self.why = why
        super().__init__(
            f"refusing to resume the chain: block record {doc_id!r} in index {index!r} "
            f"(sequence {sequence}) {why}. Nothing was signed on top of it; see "
            "docs/integrity.md, 'The sealer refuses to start'"
        )


def load_signing_key(
    config: IntegrityConfig, environ: Mapping[str, str] | None = None
) -> Ed25519PrivateKey:
    """The private key from ``key_file``, else ``key_env``, else a generated development key.

    Raises :class:`IntegrityError` (KeyFormatError) naming what is missing or unusable.
    """
    env = os.environ if environ is None else environ
    if config.key_file:
        return load_private_key(config.key_file)
    if env.get(config.key_env):
        return load_private_key_from_env(config.key_env, dict(env))
    if not config.generate_dev_key:
        raise KeyFormatError(
            f"integrity.key_file is empty and {config.key_env} is not set; create a key with "
            "'otel-audit keys generate --out DIR' and configure it"
        )
    key_dir = Path(config.state_dir) / "keys"
    path = key_dir / PRIVATE_KEY_FILENAME
    if path.exists():
        key = load_private_key(path)
    else:
        key = generate_private_key()
        write_key_pair(key, key_dir)
    if path not in _DEV_KEYS_WARNED:
        # Once per process: the sealer, the lifecycle and its CLI each load the key.
        _DEV_KEYS_WARNED.add(path)
        _log.warning(
            "DEVELOPMENT SIGNING KEY IN USE: no integrity.key_file or %s configured, so "
            "blocks are signed with %s (key id %s). Configure a real key before production.",
            config.key_env,
            path,
            key_id(key),
        )
    return key


_DEV_KEYS_WARNED: set[Path] = set()


class Sealer:
    """Seals stored events of one chain; ``start()``, ``force_flush()``, ``shutdown()``."""

    def __init__(
        self,
        es: AsyncElasticsearch,
        config: IntegrityConfig,
        *,
        private_key: Ed25519PrivateKey | None = None,
        store: CheckpointStore | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        if not config.state_dir:
            config = replace(config, state_dir="integrity-state")
        self.config = config
        self._es = es
        self._key = private_key if private_key is not None else load_signing_key(config)
        self.key_id = key_id(self._key)
        self._keyring = Keyring([self._key.public_key()])
        self._dir = StateDir(config.state_dir)
        self._store = store or open_checkpoint_store(
            config.checkpoint_dir or str(Path(config.state_dir) / "checkpoints"), self._keyring
        )
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.chain_id = ""
        self._state: ChainState | None = None
        self._journal: Journal | None = None
        self._pending = Pending()
        self._oldest_pending_at = 0.0
        self._recent: deque[tuple[float, frozenset[str]]] = deque()
        self._lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._flush_now = False
        self._task: asyncio.Task[None] | None = None
        self._inflight: BlockRecord | None = None
        self._inflight_range: CompactRange | None = None
        self._closing = False
        self._leftover = 0
        self._recovered = False
        self._refused: ChainRefused | ChainInUse | None = None
        self._lease: ChainLease | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self._backlog: deque[tuple[Entries, list[bool], float]] = deque()
        self._backlog_events = 0
        self._intent: IntentLog | None = None
        self._intent_gen = 0
        self._intent_lock = asyncio.Lock()
        # Per intent generation: [writes not settled yet, writes whose hand-off failed].
        self._intent_open: dict[int, list[int]] = {}
        self._intents_from_before: list[int] = []
        # Events of failed writes, by id: (intended leaf, generation awaiting resolution).
        self._awaiting: dict[str, tuple[bytes, int]] = {}
        self.intents_sealed = 0
        self.intents_dropped = 0
        self.intent_conflicts = 0
        self.sealing_errors = 0
        self.sweeper_passes = 0
        self.sweeper_events_found = 0
        self.blocks_sealed = 0
        self.events_sealed = 0
        self.heartbeats = 0

    # -- lifecycle ------------------------------------------------------------

    @property
    def state(self) -> ChainState:
        """The chain state after the last checkpoint (after ``start()``)."""
        if self._state is None:
            raise RuntimeError("sealer not started")
        return self._state

    @property
    def pending_count(self) -> int:
        """Stored events not sealed yet."""
        return len(self._pending)

    def stats(self) -> dict[str, float]:
        """The sealer's numbers for metrics: pending events, age of the oldest unsealed
        one (seconds, 0 when none), sealing errors, blocks, events and sweeper counts."""
        pending = len(self._pending)
        now = time.monotonic()
        oldest = [self._oldest_pending_at] if pending else []
        if self._backlog:
            oldest.append(self._backlog[0][2])
        return {
            "pending_events": float(pending + self._backlog_events),
            "oldest_unsealed_age_s": max(0.0, now - min(oldest)) if oldest else 0.0,
            "sweeper_backlog_events": float(self._backlog_events),
            "sealing_errors": float(self.sealing_errors),
            "blocks_sealed": float(self.blocks_sealed),
            "events_sealed": float(self.events_sealed),
            "sweeper_passes": float(self.sweeper_passes),
            "sweeper_events_found": float(self.sweeper_events_found),
            "intents_sealed": float(self.intents_sealed),
            "intents_dropped": float(self.intents_dropped),
            "intent_conflicts": float(self.intent_conflicts),
        }

    def stuck(self) -> tuple[bool, str]:
        """Is sealing stuck? ``(True, why)`` when stored events are not being sealed:
        the chain was refused at start, the seal loop died, the chain could not be
        resumed, or the oldest unsealed event waited longer than ``stuck_after_s``."""
        if self._refused is not None:
            return True, str(self._refused)
        if self._task is None:
            return True, "the sealer is not started"
        if self._task.done() and not self._closing:
            return True, "the seal loop stopped"
        limit = max(self.config.stuck_after_s, 2 * self.config.block_max_interval_ms / 1000)
        waited = time.monotonic() - self._oldest_pending_at
        if not self._recovered and waited > limit:
            return True, f"the chain could not be resumed for {waited:.0f} s"
        if self._backlog and time.monotonic() - self._backlog[0][2] > limit:
            return True, (
                f"{self._backlog_events} stored events could not be journaled for over "
                f"{limit:g} s; sealing errors so far: {self.sealing_errors}"
            )
        if self._pending and waited > limit:
            return True, (
                f"{len(self._pending)} stored events unsealed, the oldest for {waited:.0f} s "
                f"(integrity.stuck_after_s {limit:g}); sealing errors so far: "
                f"{self.sealing_errors}"
            )
        return False, ""

    async def start(self) -> None:
        """Lock the state dir, load the journal, reconcile with Elasticsearch, start the
        seal loop.

        Raises :class:`ChainRefused` when ``audit-blocks`` holds a record of this chain
        that this sealer did not write (the receiver then refuses to start). When
        Elasticsearch does not answer, reconciling is left to the seal loop (retried), so
        the receiver starts and journals events while Elasticsearch is down; a refusal
        found then stops sealing and :meth:`stuck` says why.
        """
        if self._task is not None:
            return
        await asyncio.to_thread(self._dir.open)
        self.chain_id = await asyncio.to_thread(self._dir.chain_id, self.config.chain_id)
        state = await asyncio.to_thread(self._dir.load_state, self.chain_id)
        state_id = await asyncio.to_thread(self._dir.state_id)
        self._lease = ChainLease(
            self._es, self.chain_id, state_id, self.config.lease_ttl_s, self._clock_ms
        )
        if state is None:
            state = ChainState(self.chain_id)
        for stale in self._dir.stale_journals(state.journal_gen):
            stale.unlink(missing_ok=True)
        self._journal = Journal(self._dir.journal_path(state.journal_gen))
        self._state = state
        # Intents left by an earlier run are resolved once the chain is resumed; this
        # run's writes log theirs in a new generation.
        self._intents_from_before = await asyncio.to_thread(self._dir.intent_gens)
        self._intent_gen = (self._intents_from_before or [-1])[-1] + 1
        self._intent = await asyncio.to_thread(self._dir.open_intent, self._intent_gen)
        self._intent_open[self._intent_gen] = [0, 0]
        leftover, ends = await asyncio.to_thread(self._journal.read_from, state.journal_offset)
        # An entry journaled twice (a retry racing its first write) is sealed once; the
        # journal offset still moves past both.
        keep = leftover.new_positions(set())
        if keep is not None:
            leftover, ends = leftover.select(keep), [ends[i] for i in keep]
        self._pending.add(leftover, ends)
        self._leftover = len(self._pending)
        self._oldest_pending_at = time.monotonic()
        try:
            self._recovered = await self._try_recover()
        except (ChainRefused, ChainInUse):
            self._journal.close()
            self._intent.close()
            self._dir.close()
            raise
        self._task = asyncio.create_task(self._seal_loop(), name="sealer")
        self._lease_task = asyncio.create_task(self._lease_loop(), name="sealer-lease")
        self._sweep_task = asyncio.create_task(self._sweep_loop(), name="sealer-sweeper")

    async def _try_recover(self) -> bool:
        """One reconciliation attempt; False when Elasticsearch could not be asked."""
        try:
            await self._recover()
            self._refused = None
            return True
        except (ChainRefused, ChainInUse) as exc:
            self._refused = exc
            _log.critical("%s", exc)
            raise
        except (TransportError, es_exc.ApiError, OSError, TimeoutError) as exc:
            self.sealing_errors += 1
            _log.error("sealer cannot resume the chain yet (%s); retrying", exc)
            return False

    async def _recover(self) -> None:
        """Take the chain's lease, adopt blocks written before a crash, drop journal
        entries already sealed."""
        if self._lease is not None and not self._lease.held:
            await self._lease.acquire()
        state = await self._adopt_records_from_es(self.state)
        self._check_store_not_ahead(state)
        async with self._lock:
            self._state = state
            if self._leftover:
                head = self._pending.entries.event_ids[: self._leftover]
                sealed = await self._sealed_in_es(head)
                kept = self._pending.discard_head(sealed, self._leftover)
                if kept:
                    _log.warning(
                        "sealing %d events stored before a restart but not sealed yet", kept
                    )
                self._leftover = 0
        try:
            await self._resolve_intents_from_before()
        except (TransportError, es_exc.ApiError, OSError, TimeoutError, RuntimeError) as exc:
            self.sealing_errors += 1
            _log.error("intents of the last run not resolved yet (%s); the sweeper retries", exc)
        _log.info(
            "sealer ready: chain %s at sequence %d, tree size %d, key %s",
            self.chain_id,
            state.sequence,
            state.tree_size,
            self.key_id,
        )

    async def _upgrade_blocks_mapping(self) -> None:
        """Give an ``audit-blocks`` index made by an earlier release (its mapping strict)
        the ``id_keys`` field every record now carries, when a record was refused for it.
        A new index has it from the template; a user without ``manage`` on the index is
        told what to ask for."""
        try:
            await self._es.indices.put_mapping(
                index=BLOCKS_INDEX, properties={"id_keys": ID_KEYS_MAPPING}
            )
        except es_exc.NotFoundError:
            pass
        except es_exc.AuthorizationException as exc:
            _log.warning(
                "cannot add id_keys to the mapping of %s (%s): if an earlier release "
                "created it, its strict mapping refuses blocks until a user with manage "
                "on it sends PUT %s/_mapping %s",
                BLOCKS_INDEX,
                exc.message,
                BLOCKS_INDEX,
                '{"properties": {"id_keys": {"type": "keyword", "doc_values": false}}}',
            )

    async def _lease_loop(self) -> None:
        """Renew the chain's lease every third of its TTL; losing it stops sealing."""
        lease = self._lease
        if lease is None:
            return
        every_s = self.config.lease_ttl_s / 3
        while True:
            await asyncio.sleep(every_s)
            if not lease.held and not self._recovered:
                continue  # not taken yet (Elasticsearch was away at start): _recover does
            try:
                if lease.held:
                    try:
                        await lease.renew()
                        continue
                    except ChainInUse as exc:
                        refusal = exc
                else:
                    refusal = ChainInUse(f"the lease on chain {self.chain_id!r} is not held")
                # A renewal that landed but whose answer was lost (a dropped connection)
                # makes the next one conflict with this receiver's own write: when the
                # lease document still names this holder, take the lease again.
                try:
                    current = await self._es.get(index=CHAIN_LEASES_INDEX, id=self.chain_id)
                except es_exc.NotFoundError:
                    raise refusal from None
                if current["_source"].get("holder") != lease.holder:
                    raise refusal
                _log.warning("the chain lease is still this receiver's; taking it again")
                await lease.acquire()
            except ChainInUse as exc:
                self._refused = exc
                _log.critical("%s", exc)
                if self._task is not None:
                    self._task.cancel()
                return
            except (TransportError, es_exc.ApiError, OSError) as exc:
                self.sealing_errors += 1
                _log.warning("could not renew the chain lease (%s); retrying", exc)

    async def force_flush(self, timeout_s: float = 30.0) -> None:
        """Seal everything pending now and wait until it is sealed."""
        deadline = time.monotonic() + timeout_s
        while self._pending:
            self._flush_now = True
            self._wakeup.set()
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(self._pending)} events still unsealed")
            if self._task is None or self._task.done():
                raise RuntimeError("sealer is not running")
            await asyncio.sleep(0.005)
        self._flush_now = False

    async def shutdown(self, timeout_s: float = 10.0) -> None:
        """Seal what is pending (within ``timeout_s``), stop, release the state dir."""
        if self._closing:
            return
        self._closing = True
        if self._task is not None and not self._task.done():
            try:
                await self.force_flush(timeout_s)
            except (TimeoutError, RuntimeError) as exc:
                # Unsealed events stay in the journal and are sealed on the next start.
                _log.warning("shutdown: %s; they are sealed on the next start", exc)
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=max(1.0, timeout_s))
            if not done:
                _log.error("the seal loop did not stop after cancellation; abandoning it")
        for task in (self._lease_task, self._sweep_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._backlog_events:
            _log.warning(
                "shutdown: %d stored events could not be journaled; they are sealed when "
                "their clients retry",
                self._backlog_events,
            )
        if self._lease is not None:
            try:
                await asyncio.wait_for(self._lease.release(), max(1.0, timeout_s))
            except Exception as exc:
                _log.warning("could not release the chain lease (%s); it expires", exc)
        if self._journal is not None:
            self._journal.close()
        if self._intent is not None:
            self._intent.close()
            open_writes, failed = self._intent_open.get(self._intent_gen, (1, 1))
            if not open_writes and not failed and not self._backlog_events:
                # Every write of this generation is journaled: nothing left to resolve.
                self._dir.intent_path(self._intent_gen).unlink(missing_ok=True)
        self._dir.close()

    # -- the write path hook --------------------------------------------------

    async def on_intent(self, entries: Entries) -> Callable[[bool], None]:
        """Log the events a write is about to send to Elasticsearch (fsynced) before it
        is sent; returns the function the write calls once it is settled, with True when
        its stored events were handed to :meth:`on_durable`.

        After a crash between the store and the journal, the intent is how the next start
        finds the stored events without a client retry: only events this receiver itself
        prepared are ever read back and sealed.
        """
        if self._intent is None or self._closing:
            raise RuntimeError("sealer is not running")
        written: tuple[IntentLog, int] | None = None
        async with self._intent_lock:
            gens = self._already_intended(entries)
            if gens is None:
                # Not all intended already (a retried replay of the spool is): log them.
                if entries:
                    intent = self._intent
                    ends = await asyncio.to_thread(intent.write, entries)
                    written = (intent, ends[-1])
                gens = {self._intent_gen}
            counted = [self._intent_open[g] for g in gens]
            for counts in counted:
                counts[0] += 1

        def settle(ok: bool) -> None:
            for counts in counted:
                counts[0] -= 1
                if not ok:
                    counts[1] += 1
            if not ok:
                # Until their generation is resolved, a retry of these events needs no
                # new intent lines: the file stays bounded however often it is retried.
                gen = min(gens)
                for event_id, leaf in zip(entries.event_ids, entries.leaf_hashes, strict=True):
                    self._awaiting.setdefault(event_id, (leaf, gen))

        if written is not None:
            # Outside the lock: a write logging its intent meanwhile shares this fsync.
            try:
                await asyncio.to_thread(written[0].sync_to, written[1])
            except BaseException:
                settle(False)
                raise
        return settle

    async def on_durable(self, stored: Entries, created: Sequence[bool]) -> None:
        """Journal events Elasticsearch confirmed; returns once the journal is written
        (synced before the intents naming them are deleted, see :class:`Journal`).

        ``created[i]`` is False for an event this write found already stored (a 409 with
        the same content): it is journaled only if no block holds it yet.
        """
        if self._journal is None or self._closing:
            raise RuntimeError("sealer is not running")
        try:
            await self._journal_confirmed(stored, created)
        except Exception:
            self._keep_for_sweeper(stored, created)
            raise

    def _keep_for_sweeper(self, stored: Entries, created: Sequence[bool]) -> None:
        """Remember stored events whose journaling failed, so the sweeper seals them
        without waiting for the client's retry (bounded; past the bound, the retry)."""
        if self._backlog_events + len(stored) > _BACKLOG_MAX_EVENTS:
            _log.error(
                "sweeper backlog full (%d events): %d stored events are sealed only when "
                "their client retries",
                self._backlog_events,
                len(stored),
            )
            return
        self._backlog.append((stored, list(created), time.monotonic()))
        self._backlog_events += len(stored)

    async def _journal_confirmed(self, stored: Entries, created: Sequence[bool]) -> None:
        fresh = stored
        if not all(created):
            fresh = stored.select([i for i, c in enumerate(created) if c])
            confirmed = stored.select([i for i, c in enumerate(created) if not c])
            fresh.extend(await self._not_yet_sealed(confirmed))
        if not fresh:
            return
        async with self._lock:
            fresh = fresh.unique(self._pending.ids)
            if not fresh:
                return
            ends = await asyncio.to_thread(self._journal_append, fresh)
            if not self._pending:
                self._oldest_pending_at = time.monotonic()
                # The loop may be asleep until the next heartbeat; this block's clock starts now.
                self._wakeup.set()
            self._pending.add(fresh, ends)
        if len(self._pending) >= self.config.block_max_events:
            self._wakeup.set()

    def _journal_append(self, entries: Entries) -> list[int]:
        if self._journal is None:
            raise RuntimeError("sealer is not running")
        return self._journal.append(entries)

    async def _sweep_loop(self) -> None:
        """Seal stored events whose hand-off failed, without waiting for client retries.

        Each pass takes the backlog in order (bounded: at most ``_SWEEP_BATCH`` events)
        and journals it as confirmations: events a client's retry sealed meanwhile are
        skipped (by id: pending, recently sealed, or in ``audit-blocks``), the rest are
        sealed with the leaf of the document Elasticsearch confirmed.
        """
        interval_s = self.config.sweep_interval_s
        while True:
            await asyncio.sleep(interval_s)
            try:
                if self._intents_from_before and self._recovered:
                    await self._resolve_intents_from_before()
                await self._rotate_intents()
            except Exception as exc:
                self.sealing_errors += 1
                _log.warning("sweeper: intents not resolved yet (%s); retrying", exc)
            if not self._backlog or not self._recovered or self._refused is not None:
                continue
            self.sweeper_passes += 1
            done = 0
            while self._backlog and done < _SWEEP_BATCH:
                stored, _created, _at = self._backlog[0]
                try:
                    # As confirmations: a client's retry may have sealed some meanwhile.
                    await self._journal_confirmed(stored, [False] * len(stored))
                except Exception as exc:
                    self.sealing_errors += 1
                    _log.warning(
                        "sweeper: %d stored events still cannot be journaled (%s)",
                        len(stored),
                        exc,
                    )
                    break
                self._backlog.popleft()
                self._backlog_events -= len(stored)
                self.sweeper_events_found += len(stored)
                done += len(stored)
            if done:
                _log.warning("sweeper: handed %d stored, unsealed events to the sealer", done)

    def _already_intended(self, entries: Entries) -> set[int] | None:
        """The generations that already hold an intent for every one of ``entries``
        (same id and leaf) and await resolution; None when some are not there."""
        awaiting = self._awaiting
        if not awaiting or not entries:
            return None
        gens = set()
        for event_id, leaf in zip(entries.event_ids, entries.leaf_hashes, strict=True):
            held = awaiting.get(event_id)
            if held is None or held[0] != leaf:
                return None
            gens.add(held[1])
        return gens

    async def _resolve_intents_from_before(self) -> None:
        """Resolve the intent files an earlier run left, oldest first, deleting each."""
        while self._intents_from_before:
            gen = self._intents_from_before[0]
            await self._resolve_intents(gen, "intended before a restart")
            await self._delete_intents(gen)
            self._intents_from_before.pop(0)

    async def _rotate_intents(self) -> None:
        """Start a new intent generation and resolve the older ones whose writes are all
        settled: a generation whose every write was journaled is deleted unread, one with
        a failed hand-off is read back from Elasticsearch first."""
        if self._intent is None:
            return
        async with self._intent_lock:
            if self._intent.size:
                old = self._intent
                gen = self._intent_gen + 1
                self._intent = await asyncio.to_thread(self._dir.open_intent, gen)
                self._intent_gen = gen
                self._intent_open[gen] = [0, 0]
                old.close()
        for gen in sorted(self._intent_open):
            open_writes, failed = self._intent_open[gen]
            if gen == self._intent_gen or open_writes:
                continue
            if failed:
                # Writes retried meanwhile may lean on these lines (see on_intent): the file
                # goes only once none is open, else the next pass resolves it again.
                await self._resolve_intents(gen, "intended by a write whose hand-off failed")
                async with self._intent_lock:
                    if self._intent_open[gen][0]:
                        continue
                    self._awaiting = {k: v for k, v in self._awaiting.items() if v[1] != gen}
            await self._delete_intents(gen)
            del self._intent_open[gen]

    async def _delete_intents(self, gen: int) -> None:
        """Delete intent generation ``gen`` once the journal holding what it names is on
        disk (journal appends are not fsynced one by one; see :class:`Journal`)."""
        async with self._lock:
            if self._journal is not None:
                await asyncio.to_thread(self._journal.sync)
        await asyncio.to_thread(self._dir.intent_path(gen).unlink, missing_ok=True)

    async def _resolve_intents(self, gen: int, why: str) -> None:
        """Seal the events of intent generation ``gen`` that Elasticsearch holds with the
        leaf this receiver intended and that no journal or block names yet (the caller
        deletes the file once no write leans on it).

        An intended event Elasticsearch does not hold was never stored (its client got no
        success and retries, or its write failed): dropped. A stored document whose leaf
        matches no intent for its id was not written as this receiver prepared it: logged
        as a conflict and left to ``verify``.
        """
        path = self._dir.intent_path(gen)
        if not path.exists():
            return
        log = IntentLog(path)
        try:
            intended, _ = await asyncio.to_thread(log.read_from, 0)
        finally:
            log.close()
        leaves: dict[tuple[str, str], set[bytes]] = {}
        for index, event_id, leaf in zip(
            intended.index_names, intended.event_ids, intended.leaf_hashes, strict=True
        ):
            leaves.setdefault((index, event_id), set()).add(leaf)
        recent: set[str] = set()
        for _, ids in self._recent:
            recent |= ids
        known = self._pending.ids | recent
        keys = [k for k in leaves if k[1] not in known]
        if keys:
            sealed = await self._sealed_in_es([k[1] for k in keys])
            keys = [k for k in keys if k[1] not in sealed]
        found = Entries()
        dropped = conflicts = 0
        for i in range(0, len(keys), _MGET_CHUNK):
            chunk = keys[i : i + _MGET_CHUNK]
            resp = await self._es.mget(docs=[{"_index": ix, "_id": eid} for ix, eid in chunk])
            for (index, event_id), doc in zip(chunk, resp["docs"], strict=True):
                error = doc.get("error")
                if error is not None and error.get("type") != "index_not_found_exception":
                    raise RuntimeError(f"reading back {event_id} from {index}: {error}")
                if not doc.get("found"):
                    dropped += 1
                    continue
                source = doc["_source"]
                leaf = leaf_hash_of_event(source)
                if leaf not in leaves[(index, event_id)]:
                    conflicts += 1
                    _log.error(
                        "intent conflict: %s in %s is stored with a leaf hash this receiver "
                        "never intended; not sealed, left to verify",
                        event_id,
                        index,
                    )
                    continue
                ts = source.get("@timestamp")
                found.index_names.append(index)
                found.event_ids.append(event_id)
                found.leaf_hashes.append(leaf)
                found.timestamps.append(ts if isinstance(ts, str) else "")
        if found:
            await self._journal_confirmed(found, [False] * len(found))
        self.intents_sealed += len(found)
        self.intents_dropped += dropped
        self.intent_conflicts += conflicts
        if found or dropped or conflicts:
            _log.warning(
                "sealing %d events %s and found stored but in no journal; %d intended "
                "events were never stored (dropped), %d conflicts",
                len(found),
                why,
                dropped,
                conflicts,
            )

    async def _not_yet_sealed(self, entries: Entries) -> Entries:
        recent: set[str] = set()
        for _, ids in self._recent:
            recent |= ids
        candidates = entries.unique(self._pending.ids | recent)
        if not candidates:
            return candidates
        sealed = await self._sealed_in_es(candidates.event_ids)
        return candidates.unique(sealed)

    async def _sealed_in_es(self, ids: list[str]) -> set[str]:
        wanted = set(ids)
        found: set[str] = set()
        for i in range(0, len(ids), 5000):
            try:
                async for hit in find_holding(self._es, ids[i : i + 5000], source_includes=[]):
                    found.update(e for e in hit["_source"]["event_ids"] if e in wanted)
            except es_exc.NotFoundError:
                return found
        return found

    # -- recovery -------------------------------------------------------------

    async def _chain_records_after(self, sequence: int) -> list[tuple[str, str, BlockRecord]]:
        """``(index, _id, record)`` of this chain's records after ``sequence``, in order;
        a document that does not parse is refused here, naming it."""
        await self._es.indices.refresh(index=BLOCKS_INDEX, ignore_unavailable=True)
        out: list[tuple[str, str, BlockRecord]] = []
        while True:
            try:
                resp = await self._es.search(
                    index=BLOCKS_INDEX,
                    query={
                        "bool": {
                            "filter": [
                                {"term": {"chain_id": self.chain_id}},
                                {"range": {"sequence": {"gt": sequence}}},
                            ]
                        }
                    },
                    sort=[{"sequence": "asc"}],
                    size=500,
                    ignore_unavailable=True,
                )
            except es_exc.NotFoundError:
                return out
            hits = resp["hits"]["hits"]
            for h in hits:
                try:
                    rec = BlockRecord.from_document(h["_source"])
                except (CheckpointFormatError, IntegrityError, KeyError, TypeError) as exc:
                    raise ChainRefused(
                        h["_index"], h["_id"], h["_source"].get("sequence"), f"unreadable: {exc}"
                    ) from exc
                out.append((h["_index"], h["_id"], rec))
            if len(hits) < 500:
                return out
            sequence = out[-1][2].sequence

    async def _adopt_records_from_es(self, state: ChainState) -> ChainState:
        """Take over records written before a crash that ``state.json`` does not know yet."""
        records = await self._chain_records_after(state.sequence)
        if not records:
            return state
        for index, doc_id, rec in records:
            why = self._refusal(rec, state)
            if why:
                raise ChainRefused(index, doc_id, rec.sequence, why)
            cp = rec.checkpoint
            offset = state.journal_offset
            n = len(rec.event_ids)
            pending = self._pending
            if n and pending.entries.event_ids[:n] == list(rec.event_ids):
                # The usual crash window: the block covers the journal's head exactly.
                offset = pending.ends[n - 1]
                pending.drop(n)
                self._leftover = max(0, self._leftover - n)
            cr = rec.frontier_range()
            cr.extend(rec.leaf_hashes)
            state = state.after_block(cp, cr, offset)
            await asyncio.to_thread(self._store.append, cp)
        _log.warning(
            "adopted %d records of chain %s written before a restart", len(records), self.chain_id
        )
        await asyncio.to_thread(self._dir.save_state, state)
        return state

    def _refusal(self, rec: BlockRecord, state: ChainState) -> str:
        """Why ``rec`` must not be adopted on top of ``state``; empty when it may.

        Only a record this sealer could have written is adopted: signed by its own key,
        for its own chain, and continuing exactly the frontier the local state holds.
        Anything else in ``audit-blocks`` was written by someone else (another receiver
        with the same chain id, or a forger with write access to Elasticsearch), and
        signing on top of it would vouch for it.
        """
        cp = rec.checkpoint
        if cp.origin != self.chain_id:
            return f"its signed origin is {cp.origin!r}, not chain {self.chain_id!r}"
        if cp.key_id != self.key_id:
            return f"signed by key {cp.key_id}, not this receiver's key {self.key_id}"
        if verify_checkpoint(cp, self._keyring) is not CheckpointStatus.OK:
            return f"its signature does not verify with this receiver's key {self.key_id}"
        if cp.sequence != state.sequence + 1 or cp.previous_hash != state.last_digest:
            return (
                f"it does not follow this receiver's last checkpoint (sequence "
                f"{state.sequence}): it would fork the chain"
            )
        if rec.first_leaf != state.tree_size or tuple(rec.frontier) != tuple(state.frontier):
            return (
                f"its frontier (first leaf {rec.first_leaf}) is not this receiver's "
                f"(tree size {state.tree_size})"
            )
        problems = rec.seal_problems(None)
        if problems:
            return "it is inconsistent: " + "; ".join(problems)
        return ""

    def _check_store_not_ahead(self, state: ChainState) -> None:
        latest = self._store.latest(self.chain_id)
        if latest is not None and latest.sequence > state.sequence:
            raise RuntimeError(
                f"the checkpoint store has checkpoint {latest.sequence} of chain "
                f"{self.chain_id} but Elasticsearch and the local state end at "
                f"{state.sequence}: blocks were lost or deleted. Run 'otel-audit verify'; "
                "start this receiver with a new chain id (integrity.chain_id) to go on"
            )

    # -- sealing --------------------------------------------------------------

    async def _seal_loop(self) -> None:
        backoff_s = 0.1
        interval_s = self.config.block_max_interval_ms / 1000
        heartbeat_s = self.config.heartbeat_interval_s
        while not self._recovered:
            try:
                self._recovered = await self._try_recover()
            except (ChainRefused, ChainInUse):
                return  # sealing stops; stuck() reports the refusal
            except Exception as exc:
                self.sealing_errors += 1
                _log.exception("sealer cannot resume the chain yet (%s); retrying", exc)
            if not self._recovered:
                await asyncio.sleep(_RETRY_MAX_S)
        last_checkpoint = time.monotonic()
        while True:
            now = time.monotonic()
            if self._pending:
                timeout = max(0.0, self._oldest_pending_at + interval_s - now)
            else:
                timeout = max(0.0, last_checkpoint + heartbeat_s - now)
            # A flush request with nothing pending must still wait: without an await here
            # the loop would spin and starve force_flush(), which clears the request.
            flushing = self._flush_now and bool(self._pending)
            if not flushing and len(self._pending) < self.config.block_max_events:
                await wait_event(self._wakeup, timeout)
            self._wakeup.clear()
            now = time.monotonic()
            try:
                if self._pending and (
                    self._flush_now
                    or len(self._pending) >= self.config.block_max_events
                    or now - self._oldest_pending_at >= interval_s
                ):
                    await self._seal_block()
                    last_checkpoint = time.monotonic()
                elif not self._pending and now - last_checkpoint >= heartbeat_s:
                    await self._heartbeat()
                    last_checkpoint = time.monotonic()
                backoff_s = 0.1
            except (TransportError, es_exc.ApiError, OSError) as exc:
                self.sealing_errors += 1
                _log.warning("sealing failed (%s); retrying in %.1f s", exc, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(_RETRY_MAX_S, backoff_s * 2)
            except Exception:
                self.sealing_errors += 1
                _log.exception("sealing failed; retrying in %.1f s", _RETRY_MAX_S)
                await asyncio.sleep(_RETRY_MAX_S)

    def _next_record(self, kind: str, entries: Entries) -> BlockRecord:
        state = self.state
        cr = state.compact_range()
        leaf_hashes = tuple(entries.leaf_hashes)
        cr.extend(leaf_hashes)
        self._inflight_range = cr
        ts = max(self._clock_ms(), state.last_timestamp_ms)
        cp = sign_checkpoint(
            make_checkpoint(
                origin=self.chain_id,
                tree_size=cr.size,
                root_hash=cr.root(),
                sequence=state.sequence + 1,
                previous_hash=state.last_digest,
                timestamp_ms=ts,
            ),
            self._key,
        )
        stamps = [t for t in entries.timestamps if t]
        return BlockRecord(
            kind=kind,
            checkpoint=cp,
            first_leaf=state.tree_size,
            event_ids=tuple(entries.event_ids),
            event_indices=tuple(entries.index_names),
            leaf_hashes=leaf_hashes,
            frontier=state.frontier,
            time_range=merge_time_range(stamps),
        )

    async def _seal_block(self) -> None:
        # A record whose write failed may still have landed (its answer lost to a dropped
        # connection or a timeout): it is written again unchanged, never replaced by
        # another record with its sequence, which audit-blocks would refuse for good.
        if self._inflight is not None and self._inflight.kind != KIND_BLOCK:
            await self._heartbeat()
        record = self._inflight
        n = min(len(self._pending), self.config.block_max_events)
        if record is not None and 0 < len(record.event_ids) <= len(self._pending):
            n = len(record.event_ids)
        else:
            record = self._next_record(KIND_BLOCK, self._pending.entries.head(n))
            self._inflight = record
        await self._commit(record, journal_offset=self._pending.ends[n - 1])
        self.blocks_sealed += 1
        self.events_sealed += n
        async with self._lock:
            self._pending.drop(n)
            self._recent.append((time.monotonic(), frozenset(record.event_ids)))
            while self._recent and self._recent[0][0] < time.monotonic() - _RECENT_S:
                self._recent.popleft()
            if self._pending:
                self._oldest_pending_at = time.monotonic()
            elif self._journal is not None and self.state.journal_offset == self._journal.size:
                await self._rotate_journal(self._journal)

    async def _rotate_journal(self, journal: Journal) -> None:
        rotation = asyncio.ensure_future(
            asyncio.to_thread(self._dir.rotate_journal, self.state, journal)
        )
        try:
            await asyncio.shield(rotation)
        finally:
            # Cancelled (shutdown) while the thread rotates: let it finish and take the new
            # journal, so nothing closes the old file again or keeps writing to it.
            if not rotation.done():
                await asyncio.wait({rotation})
            if not rotation.cancelled() and rotation.exception() is None:
                self._state, self._journal = rotation.result()

    async def _heartbeat(self) -> None:
        record = self._inflight
        if record is None or record.kind != KIND_HEARTBEAT:
            record = self._next_record(KIND_HEARTBEAT, Entries())
            self._inflight = record
        await self._commit(record, journal_offset=self.state.journal_offset)
        self.heartbeats += 1

    async def _commit(self, record: BlockRecord, journal_offset: int) -> None:
        """Write the record to ES and the checkpoint store, then advance the state."""
        if self._lease is not None and not self._lease.held:
            raise ChainInUse(f"this receiver does not hold the lease on chain {self.chain_id}")
        doc = record.to_document()
        try:
            # Serialized here: the client's stdlib JSON took ~2 ms for 5,000 events' fields
            # (the transport sends bytes as they are; the stubs only name mappings).
            body: Any = orjson.dumps(doc)
            try:
                await self._es.create(index=BLOCKS_INDEX, id=record.doc_id, document=body)
            except es_exc.BadRequestError as exc:
                if "id_keys" not in str(exc):
                    raise
                # An index an earlier release created: its strict mapping lacks the field.
                await self._upgrade_blocks_mapping()
                await self._es.create(index=BLOCKS_INDEX, id=record.doc_id, document=body)
        except es_exc.ConflictError:
            existing = await self._es.get(index=BLOCKS_INDEX, id=record.doc_id)
            if existing["_source"].get("block_hash") != doc["block_hash"]:
                raise RuntimeError(
                    f"audit-blocks already holds a different {record.doc_id}; refusing to "
                    "overwrite it"
                ) from None
        cp = record.checkpoint
        await asyncio.to_thread(self._store.append, cp)
        # The range _next_record built for this record, unless anything moved since.
        cr = self._inflight_range
        if cr is None or cr.size != cp.tree_size or cr.root() != cp.root_hash:
            cr = self.state.compact_range()
            cr.extend(record.leaf_hashes)
        new_state = self.state.after_block(cp, cr, journal_offset)
        await asyncio.to_thread(self._dir.save_state, new_state)
        self._state = new_state
        self._inflight = None
        self._inflight_range = None


def build_sealer(config: Any, es: AsyncElasticsearch) -> Sealer | None:
    """The sealer for a receiver configuration, or ``None`` when integrity is disabled."""
    # Only a loaded receiver configuration seals; plain settings objects (tests, tools
    # that reuse the write path) have no integrity section.
    sections = getattr(config, "sections", {}) or {}
    integrity = sections.get("integrity")
    if not isinstance(integrity, IntegrityConfig) or not integrity.enabled:
        return None
    if not integrity.state_dir:
        spool = Path(getattr(config, "spool_dir", "spool"))
        integrity = replace(integrity, state_dir=str(spool.parent / "integrity-state"))
    try:
        return Sealer(es, integrity)
    except (IntegrityError, CheckpointFormatError) as exc:
        raise ValueError(f"integrity: {exc}") from exc
