"""The query API: an aiohttp application under ``/api/v1``.

=========================  ========  ==========================================
route                      role      what
=========================  ========  ==========================================
GET /events                reader    filtered events, newest first, cursor pages
GET /events/{event_id}     reader    one event, its span and its sealed block
GET /traces/{trace_id}     reader    span tree with the audit events under spans
GET /stats                 stats     counts by category, outcome, action ...
GET /openapi.json          -         the OpenAPI 3.1 document
GET /healthz               -         liveness (and whether Elasticsearch answers)
=========================  ========  ==========================================

Pages are stable while events keep arriving: the first page opens an Elasticsearch point
in time and every later page continues it with ``search_after`` on (``@timestamp`` desc,
``event.id`` asc), a total order; the opaque cursor carries the point in time, the last
sort values and the filters. Every answered query is recorded as an audit event
(:mod:`indexer.query.audit`) before the answer is sent.

A token limited to tenants (``tenants:`` in its config entry) has that limit added to
every Elasticsearch search a route sends, here and in the console routes: a search,
an event, a trace (spans only beside a visible event), stats, an export or a proof of
another tenant's event finds nothing. Refused requests (401, 403) are recorded as
``denied`` and counted per client address: past ``max_refusals_per_min`` the address gets
429 for the rest of the minute. Running queries per token and in all are capped (429
with ``Retry-After``); open cursors per token too: a new search past the cap closes the
token's oldest cursor (paging it again answers 410); ``action`` patterns may not start
with ``*`` (400).

Inside ``otel-audit serve``::

    runner = await start_query_api(receiver_config, logs_consumer.consume_logs)
    ...
    await runner.cleanup()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web
from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError, TransportError

from indexer.es_client import async_client
from indexer.integrity.blocks import find_holding
from indexer.query.archive import ArchiveSearch, archive_search_of
from indexer.query.audit import QueryAuditor, WriteRecords
from indexer.query.auth import Authenticator, AuthError, Principal, RefusalLimiter
from indexer.query.config import QueryConfig, es_connection_of, query_config_of
from indexer.query.console import (
    ApiAccess,
    ScheduledVerifyStatus,
    WitnessStatus,
    add_console,
    console_config_of,
)
from indexer.query.filters import (
    Cursor,
    EventFilter,
    QueryError,
    decode_cursor,
    encode_cursor,
    events_sort,
    parse_event_filter,
    parse_limit,
    scope_filter,
    scope_query,
)
from indexer.query.openapi import openapi_document
from indexer.query.stats import shape_stats, stats_body
from indexer.query.traces import build_trace_view

__all__ = ["API_PREFIX", "build_app", "start_query_api"]

_log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
_ES_KEY: web.AppKey[AsyncElasticsearch] = web.AppKey("es", AsyncElasticsearch)
_CFG_KEY: web.AppKey[QueryConfig] = web.AppKey("query_config", QueryConfig)
_AUTH_KEY: web.AppKey[Authenticator] = web.AppKey("authenticator", Authenticator)
_AUDIT_KEY: web.AppKey[QueryAuditor] = web.AppKey("auditor", QueryAuditor)
_ARCHIVE_KEY: web.AppKey[ArchiveSearch] = web.AppKey("archive", ArchiveSearch)


class _Tasks:
    """Background tasks (closing points in time) awaited on shutdown."""

    def __init__(self) -> None:
        self.running: set[asyncio.Task[Any]] = set()


_TASKS_KEY: web.AppKey[_Tasks] = web.AppKey("tasks", _Tasks)


class _Limited(Exception):
    """A limit refused the request: 429 with Retry-After."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _Slots:
    """Queries running now, in all and per token subject."""

    def __init__(self, total: int, per_token: int) -> None:
        self._total = total
        self._per_token = per_token
        self._running = 0
        self._by_subject: dict[str, int] = {}

    def acquire(self, subject: str) -> None:
        """Take a slot for ``subject``; :class:`_Limited` when none is free."""
        mine = self._by_subject.get(subject, 0)
        if mine >= self._per_token:
            raise _Limited(
                f"this token already has {mine} queries running (the limit is "
                f"{self._per_token}); wait for one to finish"
            )
        if self._running >= self._total:
            raise _Limited(f"the API is running {self._running} queries, its limit; try again")
        self._running += 1
        self._by_subject[subject] = mine + 1

    def release(self, subject: str) -> None:
        """Give back a slot taken with :meth:`acquire`."""
        self._running -= 1
        left = self._by_subject[subject] - 1
        if left:
            self._by_subject[subject] = left
        else:
            del self._by_subject[subject]


class _Cursors:
    """Points in time each token subject holds open (until their last page or expiry)."""

    def __init__(self, per_token: int, keep_alive_s: int) -> None:
        self._per_token = per_token
        self._keep_alive_s = keep_alive_s
        self._open: dict[str, dict[str, float]] = {}

    def admit(self, subject: str, now: float) -> str | None:
        """Make room for a new point in time: past the subject's limit its oldest open one
        is given up (returned, for the caller to close); paging that cursor again answers
        410 ``cursor_expired``. A console user who starts search after search is never
        locked out, and no token holds more than its limit of points in time."""
        held = self._open.get(subject, {})
        for pit_id in [p for p, expires in held.items() if expires <= now]:
            del held[pit_id]
        if len(held) < self._per_token:
            return None
        oldest = min(held, key=held.__getitem__)
        del held[oldest]
        return oldest

    def moved(self, subject: str, old: str | None, new: str | None, now: float) -> None:
        """A page was served: ``old`` is done with, ``new`` (if any) stays open."""
        held = self._open.setdefault(subject, {})
        if old is not None:
            held.pop(old, None)
        if new is not None:
            held[new] = now + self._keep_alive_s
        if not held:
            del self._open[subject]


_SLOTS_KEY: web.AppKey[_Slots] = web.AppKey("slots", _Slots)
_CURSORS_KEY: web.AppKey[_Cursors] = web.AppKey("cursors", _Cursors)
_REFUSALS_KEY: web.AppKey[RefusalLimiter] = web.AppKey("refusals", RefusalLimiter)
_EVENT_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TRACE_ID_RE = re.compile(r"^[0-9a-fA-F]{32}$")
_TOP_MAX = 100
_T = TypeVar("_T")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error(
    status: int, code: str, message: str, param: str | None = None, **hdr: str
) -> web.Response:
    err: dict[str, Any] = {"code": code, "message": message}
    if param:
        err["param"] = param
    # Keyword names cannot hold "-": Retry_After is sent as Retry-After.
    headers = {k.replace("_", "-"): v for k, v in hdr.items()}
    return _json({"error": err}, status=status, headers=headers or None)


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except QueryError as exc:
        code = {400: "bad_request", 404: "not_found", 410: "cursor_expired"}.get(
            exc.status, "bad_request"
        )
        return _error(exc.status, code, str(exc), exc.param)
    except _Limited as exc:
        return _error(429, "too_many_requests", str(exc), Retry_After=str(exc.retry_after_s))
    except AuthError as exc:
        address = request.remote or ""
        if not request.app[_REFUSALS_KEY].refused(address, time.monotonic()):
            # Over the limit: answered without a record, and locked out (see _principal).
            return _error(
                429,
                "too_many_requests",
                "too many refused requests from this address; try again later",
                Retry_After=str(int(RefusalLimiter.WINDOW_S)),
            )
        await _record_denied(request, exc)
        code = "unauthorized" if exc.status == 401 else "forbidden"
        return _error(exc.status, code, exc.message, **{"WWW-Authenticate": exc.www_authenticate})
    except web.HTTPException as exc:
        if exc.status >= 400:
            return _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        raise
    except (ApiError, TransportError) as exc:
        _log.warning("elasticsearch error", extra={"error": str(exc)[:500]})
        return _error(
            503, "store_unavailable", "Elasticsearch did not answer the query", Retry_After="2"
        )
    except _AuditFailed as exc:
        _log.error("query audit event not recorded", extra={"error": str(exc)[:500]})
        return _error(503, "audit_unavailable", "the query could not be recorded in the audit log")


class _AuditFailed(Exception):
    """Recording the access failed: the query is refused (fail closed)."""


async def _record_denied(request: web.Request, exc: AuthError) -> None:
    try:
        await request.app[_AUDIT_KEY].record(
            # A 401 has no authenticated subject; the presented token is never recorded.
            subject=exc.subject or "unauthenticated",
            action="audit_log.search",
            resource_id=request.app[_CFG_KEY].events_index,
            details={"path": request.path, "query": _query_dict(request)},
            outcome="denied",
            client_address=request.remote or "",
            user_agent=request.headers.get("User-Agent", ""),
            reason=exc.message,
        )
    except Exception as err:  # a refused request stays refused either way
        _log.error("denied query not recorded", extra={"error": repr(err)[:500]})


def _query_dict(request: web.Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in request.query.items():
        out.setdefault(k, []).append(v)
    return out


def _principal(request: web.Request, role: str) -> Principal:
    wait = request.app[_REFUSALS_KEY].retry_after(request.remote or "", time.monotonic())
    if wait:
        raise _Limited("too many refused requests from this address; try again later", wait)
    return request.app[_AUTH_KEY].authorize(request.headers.get("Authorization"), role)


async def _audit(
    request: web.Request,
    principal: Principal,
    action: str,
    resource_id: str,
    details: dict[str, Any],
) -> None:
    try:
        await request.app[_AUDIT_KEY].record(
            subject=principal.subject,
            action=action,
            resource_id=resource_id,
            details=details,
            client_address=request.remote or "",
            user_agent=request.headers.get("User-Agent", ""),
        )
    except Exception as exc:
        raise _AuditFailed(repr(exc)) from exc


async def _audited(
    request: web.Request,
    principal: Principal,
    action: str,
    resource_id: str,
    details: dict[str, Any],
    work: Awaitable[_T],
) -> _T:
    """Run ``work`` while the access is recorded; answer only when both are done.

    Recording in parallel keeps the durable audit write off the query's critical path,
    and the answer still waits for it (fail closed). The record says the access was
    granted, which it was even when the search itself then fails.
    """
    if principal.tenants is not None:
        details = {**details, "tenant_scope": sorted(principal.tenants)}
    slots = request.app[_SLOTS_KEY]
    try:
        slots.acquire(principal.subject)
    except _Limited:
        if asyncio.iscoroutine(work):
            work.close()
        elif isinstance(work, asyncio.Future):
            work.cancel()
        raise
    try:
        record = asyncio.ensure_future(_audit(request, principal, action, resource_id, details))
        try:
            result = await work
        except BaseException:
            await asyncio.gather(record, return_exceptions=True)
            raise
        await record
        return result
    finally:
        slots.release(principal.subject)


def _background(app: web.Application, coro: Awaitable[Any]) -> None:
    task = asyncio.ensure_future(coro)
    running = app[_TASKS_KEY].running
    running.add(task)
    task.add_done_callback(running.discard)


async def _close_pit(es: AsyncElasticsearch, pit_id: str) -> None:
    try:
        await es.close_point_in_time(id=pit_id)
    except Exception as exc:  # it expires by itself anyway
        _log.debug("closing point in time failed", extra={"error": repr(exc)})


async def _events(request: web.Request) -> web.Response:
    cfg = request.app[_CFG_KEY]
    es = request.app[_ES_KEY]
    principal = _principal(request, "reader")
    query = request.query
    limit = parse_limit(query.get("limit"), cfg.default_limit, cfg.max_limit)
    for name in ("limit", "cursor"):
        if len(query.getall(name, [])) > 1:
            raise QueryError(name, "given more than once")
    token = query.get("cursor")
    cursor: Cursor | None = None
    if token is not None:
        others = sorted({k for k in query if k not in ("cursor", "limit")})
        if others:
            raise QueryError(
                others[0],
                "not allowed with cursor: the cursor already carries the filters of its search",
            )
        cursor = decode_cursor(token)
        flt = parse_event_filter(cursor.filters)
    else:
        flt = parse_event_filter(list(query.items()), extra_allowed=("limit", "cursor"))

    details = _details(flt, limit, cursor is None)
    scoped = scope_filter(flt, principal.tenants)
    cursors = request.app[_CURSORS_KEY]
    if cursor is None and scoped is not None:
        evicted = cursors.admit(principal.subject, time.monotonic())
        if evicted is not None:
            await _close_pit(es, evicted)

    async def run() -> web.Response:
        if scoped is None:  # only other tenants asked for: nothing of theirs, not a search
            return _json({"events": [], "count": 0, "next_cursor": None})
        keep_alive = f"{cfg.pit_keep_alive_s}s"
        archive = request.app.get(_ARCHIVE_KEY)
        if archive is not None:  # days the lifecycle archived are answered from the archive
            merged = await archive.page(es, scoped, cursor, limit, keep_alive, cfg.events_index)
            if merged is not None:
                return _json(merged)
        if cursor is None:
            try:
                pit = await es.open_point_in_time(index=cfg.events_index, keep_alive=keep_alive)
            except NotFoundError:
                # No event index yet: an empty log, not an error.
                return _json({"events": [], "count": 0, "next_cursor": None})
            pit_id = str(pit["id"])
        else:
            pit_id = cursor.pit_id

        body: dict[str, Any] = {
            "size": limit + 1,
            "query": scoped.query(),
            "sort": events_sort(),
            "pit": {"id": pit_id, "keep_alive": keep_alive},
            "track_total_hits": False,
        }
        if cursor is not None:
            body["search_after"] = cursor.search_after
        try:
            resp = await es.search(**body)
        except ApiError as exc:
            if cursor is None:
                raise
            if exc.status_code == 404:
                raise QueryError(
                    "cursor",
                    f"expired (cursors live {cfg.pit_keep_alive_s} s after their last page); "
                    "start again without a cursor",
                    status=410,
                ) from None
            if 400 <= exc.status_code < 500:
                raise QueryError("cursor", "not a cursor returned by this API") from None
            raise
        hits = resp["hits"]["hits"]
        new_pit = str(resp.get("pit_id") or pit_id)
        page = hits[:limit]
        next_cursor = None
        if len(hits) > limit:
            next_cursor = encode_cursor(
                Cursor(pit_id=new_pit, search_after=list(page[-1]["sort"]), filters=flt.canonical())
            )
            cursors.moved(principal.subject, pit_id, new_pit, time.monotonic())
        else:
            cursors.moved(principal.subject, pit_id, None, time.monotonic())
            _background(request.app, _close_pit(es, new_pit))
        return _json(
            {"events": [h["_source"] for h in page], "count": len(page), "next_cursor": next_cursor}
        )

    return await _audited(request, principal, "audit_log.search", cfg.events_index, details, run())


def _details(flt: EventFilter, limit: int, first: bool) -> dict[str, Any]:
    return {"filters": flt.canonical(), "limit": limit, "first_page": first}


def _one_param_only(request: web.Request, allowed: tuple[str, ...]) -> None:
    for name in request.query:
        if name not in allowed:
            raise QueryError(
                name,
                "unknown parameter"
                + (f" (known: {', '.join(allowed)})" if allowed else " (this route takes none)"),
            )


async def _event(request: web.Request) -> web.Response:
    cfg = request.app[_CFG_KEY]
    es = request.app[_ES_KEY]
    principal = _principal(request, "reader")
    _one_param_only(request, ())
    event_id = request.match_info["event_id"]
    if not _EVENT_ID_RE.match(event_id):
        raise QueryError("event_id", "not an event id (1-128 of A-Z a-z 0-9 . _ : -)")

    async def lookup() -> list[dict[str, Any]]:
        try:
            resp = await es.search(
                index=cfg.events_index,
                query=scope_query(
                    {"ids": {"values": [event_id.lower(), event_id]}}, principal.tenants
                ),
                size=1,
            )
        except NotFoundError:
            return []
        return list(resp["hits"]["hits"])

    hits = await _audited(
        request, principal, "audit_log.read", event_id, {"event_id": event_id}, lookup()
    )
    if not hits:
        raise QueryError("event_id", f"no event {event_id!r}", status=404)
    hit = hits[0]
    doc = hit["_source"]
    trace_id = doc.get("trace", {}).get("id", "")
    span_id = doc.get("span", {}).get("id", "")
    span, block = await asyncio.gather(
        _find_span(es, cfg, trace_id, span_id),
        _find_block(es, cfg, doc.get("event", {}).get("id", event_id)),
    )
    return _json(
        {
            "event": doc,
            "index": hit["_index"],
            "trace": {"id": trace_id or None, "span_id": span_id or None, "span": span}
            if trace_id
            else None,
            "block": block,
        }
    )


async def _find_span(es: AsyncElasticsearch, cfg: QueryConfig, trace_id: str, span_id: str) -> Any:
    if not trace_id or not span_id:
        return None
    try:
        resp = await es.search(
            index=cfg.spans_index, query={"ids": {"values": [f"{trace_id}-{span_id}"]}}, size=1
        )
    except NotFoundError:
        return None
    hits = resp["hits"]["hits"]
    return hits[0]["_source"] if hits else None


async def _find_block(es: AsyncElasticsearch, cfg: QueryConfig, event_id: str) -> Any:
    """The sealed block holding ``event_id`` and the event's leaf index in its chain, or
    None (no blocks index yet, or not sealed yet)."""
    try:
        async for hit in find_holding(
            es, [event_id], index=cfg.blocks_index, source_includes=_BLOCK_SUMMARY, page_size=5
        ):
            src = dict(hit["_source"])
            ids = src.pop("event_ids")
            block: dict[str, Any] = {"id": hit["_id"], **src}
            if isinstance(src.get("first_leaf"), int):
                block["leaf_index"] = src["first_leaf"] + ids.index(event_id)
            return block
    except ApiError:
        return None
    return None


_BLOCK_SUMMARY = (
    "chain_id",
    "sequence",
    "first_leaf",
    "tree_size",
    "leaf_count",
    "root_hash",
    "block_hash",
    "prev_block_hash",
    "key_id",
    "sealed_at",
    "time_range",
)


async def _trace(request: web.Request) -> web.Response:
    cfg = request.app[_CFG_KEY]
    es = request.app[_ES_KEY]
    principal = _principal(request, "reader")
    _one_param_only(request, ())
    trace_id = request.match_info["trace_id"]
    if not _TRACE_ID_RE.match(trace_id):
        raise QueryError("trace_id", f"{trace_id[:64]!r} is not 32 hex digits")
    trace_id = trace_id.lower()

    async def fetch(
        index: str, size: int, sort: list[Any], tenants: frozenset[str] | None
    ) -> tuple[list[dict[str, Any]], bool]:
        try:
            resp = await es.search(
                index=index,
                query=scope_query({"term": {"trace.id": trace_id}}, tenants),
                size=size + 1,
                sort=sort,
                track_total_hits=False,
            )
        except NotFoundError:
            return [], False
        hits = resp["hits"]["hits"]
        return [h["_source"] for h in hits[:size]], len(hits) > size

    both = asyncio.gather(
        # Spans carry no tenant: they are shown only beside at least one visible event.
        fetch(cfg.spans_index, cfg.max_trace_spans, [{"@timestamp": "asc"}], None),
        fetch(
            cfg.events_index,
            cfg.max_trace_events,
            [{"@timestamp": "asc"}, {"event.id": "asc"}],
            principal.tenants,
        ),
    )
    (spans, spans_cut), (events, events_cut) = await _audited(
        request, principal, "audit_log.read", trace_id, {"trace_id": trace_id}, both
    )
    if principal.scoped and not events:
        spans, spans_cut = [], False
    if not spans and not events:
        raise QueryError("trace_id", f"no spans or audit events for trace {trace_id}", status=404)
    view = build_trace_view(
        trace_id, spans, events, spans_truncated=spans_cut, events_truncated=events_cut
    )
    return _json(view)


async def _stats(request: web.Request) -> web.Response:
    cfg = request.app[_CFG_KEY]
    es = request.app[_ES_KEY]
    principal = _principal(request, "stats")
    top_raw = request.query.get("top")
    top = 10
    if top_raw is not None:
        try:
            top = int(top_raw)
        except ValueError:
            raise QueryError("top", f"{top_raw!r} is not an integer") from None
        if not 1 <= top <= _TOP_MAX:
            raise QueryError("top", f"must be 1..{_TOP_MAX}, got {top}")
    flt = parse_event_filter(list(request.query.items()), extra_allowed=("top",))
    scoped = scope_filter(flt, principal.tenants)
    body, window = stats_body(scoped or flt, top)

    async def count() -> dict[str, Any]:
        if scoped is None:  # only other tenants asked for: their counts are not ours to tell
            return {}
        with contextlib.suppress(NotFoundError):  # no event index yet: zero counts
            return dict((await es.search(index=cfg.events_index, **body)).body)
        return {}

    details = {"filters": flt.canonical(), "top": top}
    raw = await _audited(request, principal, "audit_log.stats", cfg.events_index, details, count())
    return _json(shape_stats(raw, window))


async def _openapi(request: web.Request) -> web.Response:
    return _json(openapi_document())


async def _healthz(request: web.Request) -> web.Response:
    es = request.app[_ES_KEY]
    try:
        health = await es.options(request_timeout=2).cluster.health()
        status = str(health.get("status", "unknown"))
    except Exception:
        return _json({"status": "degraded", "elasticsearch": "unreachable"}, status=503)
    return _json({"status": "ok", "elasticsearch": status})


def build_app(
    config: Any,
    write_records: WriteRecords | None = None,
    *,
    scheduled_verify: ScheduledVerifyStatus | None = None,
    witness: WitnessStatus | None = None,
) -> web.Application:
    """The query API application.

    ``config`` is the receiver's :class:`~receiver.config.ReceiverConfig` (its ``query``
    section is used) or a :class:`QueryConfig`. With ``write_records`` the query audit
    events are written in process; without, sent through OTLP to ``receiver_endpoint``.
    ``scheduled_verify`` and ``witness`` feed the console's chain page (the last scheduled
    verify run; the cosignatures of each chain's newest checkpoint).
    """
    cfg = query_config_of(config)
    connection = es_connection_of(config)
    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024)
    app[_CFG_KEY] = cfg
    app[_AUTH_KEY] = Authenticator(cfg.tokens)
    app[_AUDIT_KEY] = QueryAuditor.for_app(cfg, write_records)
    app[_TASKS_KEY] = _Tasks()
    app[_SLOTS_KEY] = _Slots(cfg.max_concurrent_queries, cfg.max_concurrent_queries_per_token)
    app[_CURSORS_KEY] = _Cursors(cfg.max_open_cursors_per_token, cfg.pit_keep_alive_s)
    app[_REFUSALS_KEY] = RefusalLimiter(cfg.max_refusals_per_min)
    archive = archive_search_of(config)
    if archive is not None:
        app[_ARCHIVE_KEY] = archive

    async def es_ctx(app: web.Application) -> Any:
        app[_ES_KEY] = async_client(connection, request_timeout=cfg.request_timeout_s)
        yield
        tasks = list(app[_TASKS_KEY].running)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await app[_AUDIT_KEY].shutdown()
        await app[_ES_KEY].close()
        if archive is not None:
            archive.close()

    app.cleanup_ctx.append(es_ctx)
    p = API_PREFIX
    app.router.add_get(f"{p}/events", _events)
    app.router.add_get(f"{p}/events/{{event_id}}", _event)
    app.router.add_get(f"{p}/traces/{{trace_id}}", _trace)
    app.router.add_get(f"{p}/stats", _stats)
    app.router.add_get(f"{p}/openapi.json", _openapi)
    app.router.add_get(f"{p}/healthz", _healthz)
    app.router.add_get("/healthz", _healthz)
    # The console: its page and its routes, through this app's auth and read audit.
    access = ApiAccess(p, lambda a: a[_ES_KEY], lambda a: a[_CFG_KEY], _principal, _audited)
    add_console(
        app,
        console_config_of(config),
        access,
        scheduled_verify=scheduled_verify,
        witness=witness,
    )
    return app


async def start_query_api(
    config: Any,
    write_records: WriteRecords | None = None,
    *,
    ssl_context: Any = None,
    scheduled_verify: ScheduledVerifyStatus | None = None,
    witness: WitnessStatus | None = None,
) -> web.AppRunner:
    """Build the app and listen on the configured endpoint; ``await runner.cleanup()`` stops it.

    The bound port (when the endpoint asks for port 0) is ``runner.addresses[0][1]``.
    ``ssl_context`` (from :class:`indexer.tls.ServerTls`) serves HTTPS.
    """
    cfg = query_config_of(config)
    host, port = cfg.host_port()
    app = build_app(config, write_records, scheduled_verify=scheduled_verify, witness=witness)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
    await site.start()
    _log.info(
        "query API listening",
        extra={"endpoint": f"{host}:{port}", "tls": ssl_context is not None},
    )
    return runner
