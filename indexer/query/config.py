"""Configuration of the query API: where it listens, who may use it, how much it returns.

YAML example: the ``query:`` section of the ``otel-audit serve`` config file, which
``otel-audit query-api --config`` reads too (a section registered with
``receiver.config.SECTIONS``; ``OTEL_AUDIT_QUERY__MAX_LIMIT`` and the like
override single keys)::

    query:
      endpoint: 127.0.0.1:8080               # default: the top-level query_api_endpoint
      es_url: http://127.0.0.1:9200          # default: the top-level es_url
      tokens:                                # SHA-256 hex of each token, never the token
        - subject: alice                     # recorded as the actor of her queries
          sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
          roles: [reader]
          tenants: [acme]                    # sees only events of tenant acme ("*": all)
      default_limit: 100
      max_limit: 1000
      receiver_endpoint: http://127.0.0.1:4318  # standalone only: where query audit events go

Produce a hash with ``otel-audit tokens hash`` (reads the token on stdin) or create a fresh
token and its config entry with ``otel-audit tokens generate --subject alice``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

from indexer.es_client import EsConnection
from indexer.indices import BLOCKS_INDEX, EVENTS_ALIAS, SPANS_ALIAS

__all__ = [
    "ALL_TENANTS",
    "ROLES",
    "QueryConfig",
    "QueryConfigError",
    "TokenEntry",
    "es_connection_of",
    "query_config_of",
]

ROLES = frozenset({"reader", "stats", "admin"})
"""``reader`` may search, read events and traces and see stats; ``stats`` may only see the
aggregate ``/stats`` (dashboards); ``admin`` implies every role."""

ALL_TENANTS = "*"
"""The ``tenants`` entry of a token that may read every tenant."""
_TENANT_MAX_CHARS = 256

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SUBJECT_RE = re.compile(r"^[A-Za-z0-9_.@:-]{1,128}$")
_ENDPOINT_RE = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]*):(?P<port>[0-9]{1,5})$")


class QueryConfigError(ValueError):
    """A query config value is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One API token, known only by its SHA-256."""

    subject: str = ""
    """Who holds the token; the actor of the audit events its queries produce."""
    sha256: str = ""
    """Lowercase hex SHA-256 of the token."""
    roles: tuple[str, ...] = ("reader",)
    """What the token may do (see :data:`ROLES`)."""
    tenants: tuple[str, ...] = (ALL_TENANTS,)
    """Tenants (``organization.id``) whose events the token may read; ``["*"]`` (the
    default) is every tenant, including events that carry none. A scoped token never sees
    an event of another tenant or one without a tenant, on any route."""

    @property
    def tenant_scope(self) -> frozenset[str] | None:
        """The tenants this token is limited to, or None when it may read all of them."""
        return None if ALL_TENANTS in self.tenants else frozenset(self.tenants)


@dataclass(frozen=True, slots=True)
class QueryConfig:
    """The ``query`` section. Field names equal the YAML keys; units are in the names."""

    endpoint: str = ""
    """host:port the API listens on; empty means the top-level ``query_api_endpoint``."""
    es_url: str = ""
    """Elasticsearch base URL; empty means the top-level ``es_url``."""
    es_api_key: str = field(default="", repr=False)
    """API key of the query API's own Elasticsearch user (the reader role); empty means
    the top-level connection's credentials."""
    es_username: str = ""
    """User of the query API's own Elasticsearch user (with ``es_password``)."""
    es_password: str = field(default="", repr=False)
    """Its password; never logged."""
    tokens: tuple[TokenEntry, ...] = ()
    """Accepted bearer tokens. With none configured every request is refused."""
    default_limit: int = 100
    """Page size when the request names none."""
    max_limit: int = 1000
    """Largest page size a request may ask for."""
    pit_keep_alive_s: int = 120
    """How long a cursor stays usable after its last page."""
    request_timeout_s: float = 30.0
    """Timeout of each Elasticsearch request."""
    max_trace_spans: int = 5000
    """Most spans returned by one trace view."""
    max_trace_events: int = 5000
    """Most audit events returned by one trace view."""
    events_index: str = EVENTS_ALIAS
    """Alias (or pattern) searched for audit events."""
    spans_index: str = SPANS_ALIAS
    """Alias (or pattern) searched for spans."""
    blocks_index: str = BLOCKS_INDEX
    """Index of sealed integrity blocks; may be absent."""
    audit_queries: bool = True
    """Record every served query as an ``audit_log.*`` audit event."""
    receiver_endpoint: str = ""
    """Standalone API only: OTLP/HTTP base URL the query audit events are sent to; empty
    means ``http://`` + the top-level ``http_endpoint``."""
    service_name: str = "otel-audit-query-api"
    """``service.name`` of the query audit events."""
    max_concurrent_queries_per_token: int = 4
    """Queries one token may have running at once; more are refused with 429."""
    max_concurrent_queries: int = 32
    """Queries the whole API runs at once; more are refused with 429."""
    max_open_cursors_per_token: int = 8
    """Points in time (cursors with a next page) one token may hold open; a new first page
    beyond that is refused with 429 until one is finished or expires."""
    max_refusals_per_min: int = 30
    """Refused requests (401, 403) per client address and minute that are answered and
    recorded; past that the address gets 429 until the minute is over, so a token-guessing
    loop neither floods the audit log nor gets unlimited guesses."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`QueryConfigError` naming the first bad key."""
        if self.endpoint:
            self.host_port()
        if not 1 <= self.max_limit <= 10_000:
            # Elasticsearch refuses pages over index.max_result_window (10,000 by default).
            raise QueryConfigError(f"query.max_limit: must be 1..10000, got {self.max_limit}")
        if not 1 <= self.default_limit <= self.max_limit:
            raise QueryConfigError(
                f"query.default_limit: must be between 1 and max_limit ({self.max_limit}), "
                f"got {self.default_limit}"
            )
        for key in ("pit_keep_alive_s", "max_trace_spans", "max_trace_events"):
            value = getattr(self, key)
            if not 1 <= value <= 10_000:
                raise QueryConfigError(f"query.{key}: must be 1..10000, got {value}")
        for key in (
            "max_concurrent_queries_per_token",
            "max_concurrent_queries",
            "max_open_cursors_per_token",
            "max_refusals_per_min",
        ):
            value = getattr(self, key)
            if not 1 <= value <= 100_000:
                raise QueryConfigError(f"query.{key}: must be 1..100000, got {value}")
        if self.request_timeout_s <= 0:
            raise QueryConfigError(
                f"query.request_timeout_s: must be > 0, got {self.request_timeout_s}"
            )
        if self.es_url and not self.es_url.startswith(("http://", "https://")):
            raise QueryConfigError(f"query.es_url: {self.es_url!r} is not an http(s) URL")
        seen: set[str] = set()
        for i, token in enumerate(self.tokens):
            where = f"query.tokens[{i}]"
            if not _SUBJECT_RE.match(token.subject):
                raise QueryConfigError(f"{where}.subject: expected 1-128 chars of [A-Za-z0-9_.@:-]")
            if not _SHA256_RE.match(token.sha256):
                raise QueryConfigError(
                    f"{where}.sha256: expected 64 lowercase hex digits (the SHA-256 of the "
                    "token, see `otel-audit tokens hash`)"
                )
            if token.sha256 in seen:
                raise QueryConfigError(f"{where}.sha256: the same token is listed twice")
            seen.add(token.sha256)
            bad = sorted(set(token.roles) - ROLES)
            if not token.roles or bad:
                raise QueryConfigError(
                    f"{where}.roles: unknown or missing role(s) {', '.join(bad) or '[]'} "
                    f"(known: {', '.join(sorted(ROLES))})"
                )
            if isinstance(token.tenants, str) or not token.tenants:
                raise QueryConfigError(
                    f'{where}.tenants: a list of tenant ids, or ["*"] for every tenant'
                )
            for tenant in token.tenants:
                if not isinstance(tenant, str) or not 1 <= len(tenant) <= _TENANT_MAX_CHARS:
                    raise QueryConfigError(
                        f"{where}.tenants: {tenant!r} is not a tenant id "
                        f"(1-{_TENANT_MAX_CHARS} characters)"
                    )
            if ALL_TENANTS in token.tenants and len(token.tenants) > 1:
                raise QueryConfigError(
                    f'{where}.tenants: "*" (every tenant) cannot be combined with others'
                )

    def host_port(self) -> tuple[str, int]:
        """The listening address parsed from ``endpoint``."""
        m = _ENDPOINT_RE.match(self.endpoint)
        if not m or not 0 <= int(m["port"]) <= 65535:
            raise QueryConfigError(f"query.endpoint: {self.endpoint!r} is not host:port")
        return (m["host"].strip("[]") or "0.0.0.0", int(m["port"]))

    def resolved(self, *, endpoint: str, es_url: str, receiver_endpoint: str) -> QueryConfig:
        """This section with the inherited top-level values filled in."""
        return replace(
            self,
            endpoint=self.endpoint or endpoint,
            es_url=self.es_url or es_url,
            receiver_endpoint=self.receiver_endpoint or receiver_endpoint,
        )


def es_connection_of(config: Any) -> EsConnection:
    """How the query API reaches Elasticsearch: the receiver's connection (``es_*`` keys),
    or the ``OTEL_AUDIT_ES_*`` environment for a bare :class:`QueryConfig`; a
    ``query.es_url`` overrides the URL, and ``query.es_api_key`` or ``query.es_username`` /
    ``es_password`` the credentials (so the API reads as a reader, not as the writer)."""
    if isinstance(config, QueryConfig):
        return _own_credentials(EsConnection.from_env(url=config.es_url or None), config)
    connection = EsConnection.from_config(config)
    section = config.sections.get("query") if hasattr(config, "sections") else None
    if not isinstance(section, QueryConfig):
        return connection
    if section.es_url:
        connection = replace(connection, url=section.es_url)
    return _own_credentials(connection, section)


def _own_credentials(connection: EsConnection, section: QueryConfig) -> EsConnection:
    if section.es_api_key:
        return replace(connection, api_key=section.es_api_key, username="", password="")
    if section.es_username or section.es_password:
        return replace(
            connection, api_key="", username=section.es_username, password=section.es_password
        )
    return connection


def query_config_of(config: Any) -> QueryConfig:
    """The effective query config of a :class:`receiver.config.ReceiverConfig` (or a
    :class:`QueryConfig`, returned with defaults filled in)."""
    if isinstance(config, QueryConfig):
        return config.resolved(
            endpoint="127.0.0.1:8080",
            es_url=os.environ.get("OTEL_AUDIT_ES_URL", "http://127.0.0.1:9200"),
            receiver_endpoint="http://127.0.0.1:4318",
        )
    section = config.sections.get("query") if hasattr(config, "sections") else None
    if not isinstance(section, QueryConfig):
        section = QueryConfig()
    host, _, port = str(config.http_endpoint).rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return section.resolved(
        endpoint=config.query_api_endpoint,
        es_url=config.es_url,
        receiver_endpoint=f"http://{host}:{port}",
    )
