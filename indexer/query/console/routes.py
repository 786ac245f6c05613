"""The console's routes on the query API's application.

=================================  ======  =====================================================
route                              role    what
=================================  ======  =====================================================
GET /console/, /console/...        -       the page shell (static HTML, no audit data)
GET /console/static/{file}         -       the shipped JavaScript and CSS
GET /api/v1/whoami                 reader  the token's subject and roles (the login check)
GET /api/v1/keys                   -       the configured public keys (``console.public_keys``)
GET /api/v1/events/{id}/proof      reader  the event's inclusion proof bundle
GET /api/v1/export                 reader  the filtered events as CSV or NDJSON, streamed
GET /api/v1/chains                 reader  per chain: newest block, checkpoint, cosignatures
=================================  ======  =====================================================

Every route that reads the audit log records the read first (``audit_log.prove``,
``audit_log.export``, ``audit_log.status``) through the query API's own auditor, and the
page itself only ever reads through the API, so each page view leaves a record.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

from aiohttp import web
from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError

from indexer.integrity.blocks import BlockRecord, find_holding
from indexer.query.auth import AuthError, Principal
from indexer.query.config import QueryConfig
from indexer.query.console.chains import chains_body, shape_chains
from indexer.query.console.config import ConsoleConfig
from indexer.query.console.export import csv_header, csv_row, ndjson_line
from indexer.query.console.keys import PublicKeyInfo, load_public_keys
from indexer.query.console.witnesses import WitnessStatus
from indexer.query.filters import QueryError, events_sort, parse_event_filter, scope_filter
from otel_audit.integrity import IntegrityError, make_bundle
from otel_audit.integrity.block_proof import audit_path_from_block

__all__ = ["ApiAccess", "ScheduledVerifyStatus", "add_console"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

ScheduledVerifyStatus = Callable[[], Mapping[str, Any] | None]
"""Returns the last scheduled verify (time, findings by kind, ...) or None when none ran."""


@dataclass(frozen=True, slots=True)
class ApiAccess:
    """What the console borrows from the query API: its client, config, auth and audit.

    Handed over by ``indexer.query.api.build_app`` so that the console's reads go through
    exactly the same token check and read audit as every other route.
    """

    prefix: str
    """The API's path prefix (``/api/v1``)."""
    es: Callable[[web.Application], AsyncElasticsearch]
    query_config: Callable[[web.Application], QueryConfig]
    principal: Callable[[web.Request, str], Principal]
    """Authenticate the request and require the role (raises the API's AuthError)."""
    audited: Callable[..., Awaitable[Any]]
    """``audited(request, principal, action, resource_id, details, work)``: run ``work``
    while the access is recorded; raise when it cannot be recorded (fail closed)."""


_EVENT_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_STATIC = resources.files("indexer.query.console") / "static"
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
# Same-origin scripts and styles only; nothing from elsewhere, no inline code, no framing.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
_EXPORT_PAGE = 1000
_EXPORT_FORMATS = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "ndjson": ("application/x-ndjson", "ndjson"),
}

_KEYS_KEY: web.AppKey[tuple[PublicKeyInfo, ...]] = web.AppKey("console_keys", tuple)


def _static_files() -> dict[str, bytes]:
    """Every shipped asset, read once: the set is fixed, so no path from a URL is opened."""
    out: dict[str, bytes] = {}
    for entry in _STATIC.iterdir():
        name = entry.name
        if entry.is_file() and any(name.endswith(s) for s in _TYPES):
            out[name] = entry.read_bytes()
    return out


def add_console(
    app: web.Application,
    config: ConsoleConfig,
    access: ApiAccess,
    *,
    scheduled_verify: ScheduledVerifyStatus | None = None,
    witness: WitnessStatus | None = None,
) -> None:
    """Register the console's page and routes on the query API ``app``.

    Raises :class:`~indexer.query.console.config.ConsoleConfigError` when a configured
    public key cannot be read, so a misconfigured console stops the server at start.
    """
    keys = load_public_keys(config.public_keys)
    app[_KEYS_KEY] = keys
    p = access.prefix
    app.router.add_get(f"{p}/whoami", _whoami(access))
    app.router.add_get(f"{p}/keys", _keys)
    app.router.add_get(f"{p}/events/{{event_id}}/proof", _proof(access))
    app.router.add_get(f"{p}/export", _export(access, config))
    app.router.add_get(f"{p}/chains", _chains(access, config, scheduled_verify, witness))
    if not config.enabled:
        return
    files = _static_files()
    index = files["index.html"]

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=index, content_type="text/html", headers=_PAGE_HEADERS)

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = files.get(name)
        if body is None:
            raise web.HTTPNotFound()
        suffix = name[name.rfind(".") :]
        return web.Response(body=body, content_type=_TYPES[suffix], headers=_PAGE_HEADERS)

    async def to_console(request: web.Request) -> web.Response:
        raise web.HTTPFound("/console/")

    app.router.add_get("/", to_console)
    app.router.add_get("/console", to_console)
    app.router.add_get("/console/static/{name}", static)
    app.router.add_get("/console/{tail:.*}", page)


def _whoami(access: ApiAccess) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        principal = access.principal(request, "reader")
        return web.json_response({"subject": principal.subject, "roles": sorted(principal.roles)})

    return handler


async def _keys(request: web.Request) -> web.Response:
    keys = request.app[_KEYS_KEY]
    return web.json_response({"keys": [k.to_json_dict() for k in keys]})


def _proof(access: ApiAccess) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        principal = access.principal(request, "reader")
        if request.query:
            raise QueryError(next(iter(request.query)), "unknown parameter (this route takes none)")
        event_id = request.match_info["event_id"]
        if not _EVENT_ID_RE.match(event_id):
            raise QueryError("event_id", "not an event id (1-128 of A-Z a-z 0-9 . _ : -)")
        es = access.es(request.app)
        cfg = access.query_config(request.app)

        async def work() -> dict[str, Any]:
            return await _bundle(es, cfg, event_id, principal.tenants)

        body = await access.audited(
            request, principal, "audit_log.prove", event_id, {"event_id": event_id}, work()
        )
        return web.json_response(body)

    return handler


async def _bundle(
    es: AsyncElasticsearch, cfg: QueryConfig, event_id: str, tenants: frozenset[str] | None
) -> dict[str, Any]:
    try:
        hit = await anext(find_holding(es, [event_id], index=cfg.blocks_index, page_size=5), None)
    except NotFoundError:
        hit = None
    if hit is None:
        raise QueryError("event_id", f"event {event_id} is not in a sealed block yet", status=404)
    try:
        block = BlockRecord.from_document(hit["_source"])
    except IntegrityError as exc:
        raise QueryError(
            "event_id", f"the block record holding {event_id} is malformed: {exc}", status=409
        ) from None
    pos = block.event_ids.index(event_id)
    try:
        got = await es.get(index=block.event_indices[pos], id=event_id)
    except NotFoundError:
        raise QueryError(
            "event_id",
            f"event {event_id} is sealed in block {block.sequence} of chain {block.chain_id} "
            f"but missing from {block.event_indices[pos]}",
            status=409,
        ) from None
    if tenants is not None and got["_source"].get("organization", {}).get("id") not in tenants:
        # Another tenant's event: answered exactly like one that is not sealed yet.
        raise QueryError("event_id", f"event {event_id} is not in a sealed block yet", status=404)
    leaf_index = block.first_leaf + pos
    try:
        path = audit_path_from_block(
            block.first_leaf, block.frontier, block.leaf_hashes, leaf_index
        )
    except IntegrityError as exc:
        raise QueryError(
            "event_id", f"no proof from block {block.sequence}: {exc}", status=409
        ) from None
    bundle = make_bundle(
        got["_source"], leaf_index, path, block.checkpoint, leaf_hash=block.leaf_hashes[pos]
    )
    return bundle.to_json_dict()


def _export(
    access: ApiAccess, config: ConsoleConfig
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        principal = access.principal(request, "reader")
        formats = request.query.getall("format", [])
        if len(formats) != 1 or formats[0] not in _EXPORT_FORMATS:
            raise QueryError("format", "give format=csv or format=ndjson, once")
        fmt = formats[0]
        flt = parse_event_filter(list(request.query.items()), extra_allowed=("format",))
        scoped = scope_filter(flt, principal.tenants)
        cfg = access.query_config(request.app)
        es = access.es(request.app)
        details = {
            "filters": flt.canonical(),
            "format": fmt,
            "max_events": config.max_export_events,
        }
        # Recorded before the first byte: an export that cannot be recorded never starts.
        await access.audited(
            request, principal, "audit_log.export", cfg.events_index, details, asyncio.sleep(0)
        )
        content_type, ext = _EXPORT_FORMATS[fmt]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        response = web.StreamResponse(
            headers={
                "Content-Type": content_type,
                "Content-Disposition": f'attachment; filename="audit-events-{stamp}.{ext}"',
                "X-Export-Max-Events": str(config.max_export_events),
                "Cache-Control": "no-store",
            }
        )
        await response.prepare(request)
        if fmt == "csv":
            await response.write(("\ufeff" + csv_header()).encode("utf-8"))
        written = 0
        try:
            pages = _pages(es, cfg, scoped.query(), config.max_export_events) if scoped else _none()
            async for docs in pages:
                if fmt == "csv":
                    await response.write("".join(csv_row(d) for d in docs).encode("utf-8"))
                else:
                    await response.write(b"".join(ndjson_line(d) for d in docs))
                written += len(docs)
        except (ApiError, ConnectionError, asyncio.CancelledError) as exc:
            # The status line is sent: cut the body short, so the client sees a failed
            # download rather than a complete-looking partial file.
            _log.warning("export aborted", extra={"error": repr(exc)[:300], "written": written})
            raise
        await response.write_eof()
        return response

    return handler


async def _none() -> Any:
    """No pages (an export limited to tenants the token may not read)."""
    for _ in ():
        yield []


async def _pages(
    es: AsyncElasticsearch, cfg: QueryConfig, query: dict[str, Any], limit: int
) -> Any:
    """Pages of matching ``_source`` documents, newest first, at most ``limit`` in all."""
    keep_alive = f"{cfg.pit_keep_alive_s}s"
    try:
        pit = await es.open_point_in_time(index=cfg.events_index, keep_alive=keep_alive)
    except NotFoundError:
        return
    pit_id = str(pit["id"])
    after: list[Any] | None = None
    left = limit
    try:
        while left > 0:
            body: dict[str, Any] = {
                "size": min(_EXPORT_PAGE, left),
                "query": query,
                "sort": events_sort(),
                "pit": {"id": pit_id, "keep_alive": keep_alive},
                "track_total_hits": False,
            }
            if after is not None:
                body["search_after"] = after
            resp = await es.search(**body)
            pit_id = str(resp.get("pit_id") or pit_id)
            hits = resp["hits"]["hits"]
            if not hits:
                return
            left -= len(hits)
            yield [h["_source"] for h in hits]
            if len(hits) < body["size"]:
                return
            after = list(hits[-1]["sort"])
    finally:
        try:
            await es.close_point_in_time(id=pit_id)
        except Exception as exc:  # it expires by itself anyway
            _log.debug("closing point in time failed", extra={"error": repr(exc)})


def _chains(
    access: ApiAccess,
    config: ConsoleConfig,
    scheduled_verify: ScheduledVerifyStatus | None,
    witness: WitnessStatus | None,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        principal = access.principal(request, "reader")
        if principal.scoped:
            # Chain heads count every tenant's events: not for a token limited to some.
            raise AuthError(
                403,
                "chain status covers every tenant; this token is limited to some",
                "insufficient_scope",
                subject=principal.subject,
            )
        if request.query:
            raise QueryError(next(iter(request.query)), "unknown parameter (this route takes none)")
        cfg = access.query_config(request.app)
        es = access.es(request.app)

        async def work() -> Mapping[str, Any]:
            try:
                return dict((await es.search(index=cfg.blocks_index, **chains_body())).body)
            except NotFoundError:  # nothing sealed yet
                return {}

        raw = await access.audited(
            request, principal, "audit_log.status", cfg.blocks_index, {"view": "chains"}, work()
        )
        # The witness view reads small files from the checkpoint directory: off the loop.
        body = await asyncio.to_thread(
            shape_chains,
            raw,
            now_ms=time.time_ns() // 1_000_000,
            stale_after_s=config.checkpoint_stale_after_s,
            scheduled_verify=scheduled_verify() if scheduled_verify is not None else None,
            witness=witness,
        )
        return web.json_response(body)

    return handler
