"""The OpenAPI 3.1 document of the query API, derived from the filter list in
:mod:`indexer.query.filters` so parameters are described in one place only."""

from __future__ import annotations

from functools import cache
from typing import Any

from indexer.query.filters import FILTER_PARAMS, MAX_VALUE_CHARS

__all__ = ["openapi_document"]


def _filter_parameters() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in FILTER_PARAMS:
        item: dict[str, Any] = {"type": "string", "maxLength": MAX_VALUE_CHARS}
        if p.enum:
            item["enum"] = list(p.enum)
        if p.hex_len:
            item["pattern"] = f"^[0-9a-fA-F]{{{p.hex_len}}}$"
        schema: dict[str, Any] = {"type": "array", "items": item} if p.repeatable else item
        desc = p.description
        if p.repeatable:
            desc += " Repeat the parameter to match any of several values."
        out.append(
            {
                "name": p.name,
                "in": "query",
                "required": False,
                "description": desc,
                "schema": schema,
                "style": "form",
                "explode": True,
                "example": [p.example] if p.repeatable else p.example,
            }
        )
    return out


def _error_responses(*codes: int) -> dict[str, Any]:
    text = {
        400: "A parameter is invalid; `error.param` names it.",
        401: "Missing or unknown bearer token (`WWW-Authenticate: Bearer`).",
        403: "The token lacks the role this route needs.",
        404: "Nothing with that id.",
        410: "The cursor expired, or the token's newer searches closed it (past its cap of "
        "open cursors); start again without it.",
        429: "A limit was reached (running queries of the token or in all, or refused "
        "requests from the address); `Retry-After` says when to try again.",
        503: "Elasticsearch did not answer, or the query could not be recorded in the audit log.",
    }
    return {
        str(c): {
            "description": text[c],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for c in codes
    }


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "200": {"description": description, "content": {"application/json": {"schema": schema}}}
    }


@cache
def openapi_document() -> dict[str, Any]:
    """The whole document (built once)."""
    filters = _filter_parameters()
    limit = {
        "name": "limit",
        "in": "query",
        "description": "Page size (default 100; at most max_limit, 1000 by default).",
        "schema": {"type": "integer", "minimum": 1},
    }
    cursor = {
        "name": "cursor",
        "in": "query",
        "description": "The `next_cursor` of the previous page. It carries the filters: send "
        "it alone (with `limit` at most). Pages never skip or repeat events, even while new "
        "events arrive.",
        "schema": {"type": "string"},
    }
    top = {
        "name": "top",
        "in": "query",
        "description": "How many actions, actors, resources, services to list (1-100; 10).",
        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
    }
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    event_ref = {"$ref": "#/components/schemas/Event"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "otel-audit query API",
            "version": "1",
            "description": "Search audit events, read one with its trace and sealed block, "
            "see a trace with its audit events, and count. Every answered query is itself "
            "recorded as an audit event (audit_log.search / audit_log.read / audit_log.stats).",
        },
        "servers": [{"url": "/api/v1"}],
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Tokens are configured as SHA-256 hashes with roles "
                    "(reader, stats, admin).",
                }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "param": {"type": "string"},
                            },
                        }
                    },
                },
                "Event": {
                    "type": "object",
                    "description": "A stored audit event (ECS names; see docs/schema.md).",
                    "additionalProperties": True,
                },
                "EventPage": {
                    "type": "object",
                    "required": ["events", "count", "next_cursor"],
                    "properties": {
                        "events": {"type": "array", "items": event_ref},
                        "count": {"type": "integer"},
                        "next_cursor": {"type": ["string", "null"]},
                    },
                },
                "SpanNode": {
                    "type": "object",
                    "properties": {
                        "span": {
                            "type": "object",
                            "properties": {
                                "span_id": {"type": "string"},
                                "parent_id": {"type": "string"},
                                "name": {"type": "string"},
                                "kind": {"type": "string"},
                                "service": {"type": "string"},
                                "start": {"type": "string"},
                                "end": {"type": "string"},
                                "duration_ns": {"type": "integer"},
                                "status": {"type": "object"},
                                "depth": {"type": "integer"},
                                "missing_parent": {"type": "boolean"},
                            },
                        },
                        "events": {"type": "array", "items": event_ref},
                        "children": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/SpanNode"},
                        },
                    },
                },
                "Trace": {
                    "type": "object",
                    "properties": {
                        "trace_id": {"type": "string"},
                        "services": {"type": "array", "items": {"type": "string"}},
                        "span_count": {"type": "integer"},
                        "event_count": {"type": "integer"},
                        "start": {"type": ["string", "null"]},
                        "end": {"type": ["string", "null"]},
                        "roots": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/SpanNode"},
                        },
                        "unattached": {"type": "array", "items": event_ref},
                        "truncated": {"type": "object"},
                    },
                },
                "Counts": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"key": {"type": "string"}, "count": {"type": "integer"}},
                    },
                },
                "Stats": {
                    "type": "object",
                    "properties": {
                        "window": {"type": "object"},
                        "total": {"type": "integer"},
                        "by_category": {"$ref": "#/components/schemas/Counts"},
                        "by_outcome": {"$ref": "#/components/schemas/Counts"},
                        "by_action": {"$ref": "#/components/schemas/Counts"},
                        "by_service": {"$ref": "#/components/schemas/Counts"},
                        "top_actors": {"$ref": "#/components/schemas/Counts"},
                        "top_resources": {"type": "array", "items": {"type": "object"}},
                        "over_time": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
        },
        "paths": {
            "/events": {
                "get": {
                    "summary": "Search audit events, newest first",
                    "security": secured,
                    "parameters": [*filters, limit, cursor],
                    "responses": {
                        **_ok("One page of events.", {"$ref": "#/components/schemas/EventPage"}),
                        **_error_responses(400, 401, 403, 410, 429, 503),
                    },
                }
            },
            "/events/{event_id}": {
                "get": {
                    "summary": "One event with its trace context and sealed block",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "event_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        **_ok(
                            "The event; `block` is null until the event is sealed.",
                            {
                                "type": "object",
                                "properties": {
                                    "event": event_ref,
                                    "index": {"type": "string"},
                                    "trace": {"type": ["object", "null"]},
                                    "block": {"type": ["object", "null"]},
                                },
                            },
                        ),
                        **_error_responses(400, 401, 403, 404, 429, 503),
                    },
                }
            },
            "/traces/{trace_id}": {
                "get": {
                    "summary": "A trace's spans as a tree with its audit events under their spans",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "trace_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"},
                        }
                    ],
                    "responses": {
                        **_ok("The trace view.", {"$ref": "#/components/schemas/Trace"}),
                        **_error_responses(400, 401, 403, 404, 429, 503),
                    },
                }
            },
            "/stats": {
                "get": {
                    "summary": "Counts over a time range (default: the last 24 hours)",
                    "security": secured,
                    "parameters": [*filters, top],
                    "responses": {
                        **_ok("Counts.", {"$ref": "#/components/schemas/Stats"}),
                        **_error_responses(400, 401, 403, 429, 503),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": _ok("OpenAPI 3.1", {"type": "object"}),
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness; 503 when Elasticsearch does not answer",
                    "responses": {
                        **_ok("Healthy", {"type": "object"}),
                        "503": {"description": "Elasticsearch unreachable"},
                    },
                }
            },
        },
    }
