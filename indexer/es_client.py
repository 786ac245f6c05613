"""How every part of the project connects to Elasticsearch: one settings object, one factory.

Production clusters run with security on: HTTPS with their own CA, and an API key or a
user and password for each client. The receiver, the query API, verify, the template
and retention commands and the benchmarks all build their clients here, from the same
keys, so an operator configures a connection once:

==================  ===============================  =====================================
key (receiver YAML)  environment                    meaning
==================  ===============================  =====================================
``es_url``           ``OTEL_AUDIT_ES_URL``           base URL (several: comma-separated)
``es_cloud_id``      ``OTEL_AUDIT_ES_CLOUD_ID``      Elastic Cloud deployment (instead of a URL)
``es_api_key``       ``OTEL_AUDIT_ES_API_KEY``       API key (``id:key`` or its base64 form)
``es_username``      ``OTEL_AUDIT_ES_USERNAME``      basic authentication user ...
``es_password``      ``OTEL_AUDIT_ES_PASSWORD``      ... and password
``es_ca_file``       ``OTEL_AUDIT_ES_CA_FILE``       PEM file of the CA that signed the cluster
``es_ca_fingerprint``  ``OTEL_AUDIT_ES_CA_FINGERPRINT``  or the SHA-256 fingerprint of its CA
==================  ===============================  =====================================

Secrets (the API key, the password) never appear in ``repr``, logs or ``--check-config``
output. :func:`describe_error` turns a failed connection into a sentence that names the
cause (wrong CA, refused credentials, nothing listening).
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import TlsError
from elasticsearch import AsyncElasticsearch, Elasticsearch
from elasticsearch import exceptions as es_exc

__all__ = [
    "DEFAULT_URL",
    "ENV_KEYS",
    "ROLES",
    "EsConnection",
    "async_client",
    "describe_error",
    "sync_client",
]

DEFAULT_URL = "http://127.0.0.1:9200"

ENV_KEYS: Mapping[str, str] = {
    "url": "OTEL_AUDIT_ES_URL",
    "cloud_id": "OTEL_AUDIT_ES_CLOUD_ID",
    "api_key": "OTEL_AUDIT_ES_API_KEY",
    "username": "OTEL_AUDIT_ES_USERNAME",
    "password": "OTEL_AUDIT_ES_PASSWORD",
    "ca_file": "OTEL_AUDIT_ES_CA_FILE",
    "ca_fingerprint": "OTEL_AUDIT_ES_CA_FINGERPRINT",
}
"""The environment variable of each :class:`EsConnection` field."""

_SECRET = ("api_key", "password")

_EVENT_WRITES = ["audit-events-*", "audit-rejected-*", "audit-spans-*"]

ROLES: Mapping[str, Mapping[str, Any]] = {
    # The receiver: creates documents (never updates), auto-creates the daily indices from
    # the templates, reads back a stored event when a retry answers 409 (same content or a
    # conflict?), seals blocks into audit-blocks and reads its chain head at start.
    "otel_audit_writer": {
        "cluster": ["monitor"],
        "indices": [
            {
                "names": [*_EVENT_WRITES, "audit-events", "audit-spans"],
                "privileges": ["create_doc", "auto_configure", "read", "view_index_metadata"],
            },
            {
                "names": ["audit-blocks"],
                "privileges": [
                    "create_doc",
                    "create_index",
                    "read",
                    "view_index_metadata",
                    "maintenance",
                ],
            },
            {
                # One lease document per chain (receiver/sealing/lease.py): created, renewed
                # in place with if_seq_no/if_primary_term, deleted on a clean shutdown.
                "names": ["audit-chain-leases"],
                "privileges": ["create_index", "read", "view_index_metadata", "write"],
            },
        ],
    },
    # Installs and upgrades the index templates (`otel-audit templates install`).
    "otel_audit_setup": {
        "cluster": ["monitor", "manage_index_templates"],
        "indices": [],
    },
    # The query API: searches and points in time over events, spans and blocks.
    "otel_audit_reader": {
        "cluster": ["monitor"],
        "indices": [
            {
                "names": ["audit-events*", "audit-spans*", "audit-blocks", "audit-lifecycle"],
                "privileges": ["read", "view_index_metadata"],
            }
        ],
    },
    # `otel-audit lifecycle` and `otel-audit restore`: reads what it archives (refreshing
    # first, so that counts see every write), deletes the hot indices it has archived and
    # verified (past retention, not on legal hold), restores archived days (creates their
    # events again), and keeps its lease and its signed step records in audit-lifecycle
    # (the lease is renewed in place and deleted when a run ends; a record is rewritten
    # when a step is retried).
    "otel_audit_lifecycle": {
        "cluster": ["monitor"],
        "indices": [
            {
                "names": ["audit-events*", "audit-spans*", "audit-rejected-*", "audit-blocks"],
                "privileges": ["read", "view_index_metadata", "maintenance"],
            },
            {
                "names": ["audit-events-*", "audit-spans-*", "audit-rejected-*"],
                "privileges": ["delete_index"],
            },
            {
                "names": ["audit-events-*"],
                "privileges": ["create_doc", "auto_configure"],
            },
            {
                "names": ["audit-lifecycle"],
                "privileges": ["create_index", "index", "delete", "read", "view_index_metadata"],
            },
        ],
    },
    # `otel-audit verify`: reads events, block records and lifecycle records.
    "otel_audit_verify": {
        "cluster": ["monitor"],
        "indices": [
            {
                "names": ["audit-events*", "audit-blocks", "audit-lifecycle"],
                "privileges": ["read", "view_index_metadata"],
            }
        ],
    },
}
"""The least-privilege Elasticsearch role of each client, as ``PUT _security/role/<name>``
bodies (docs/security.md shows the same). The integration tests run the receiver, the
template install, the query API and verify as users holding only their role."""


@dataclass(frozen=True, slots=True)
class EsConnection:
    """Where Elasticsearch is and how to prove who we are to it."""

    url: str = DEFAULT_URL
    cloud_id: str = ""
    api_key: str = dataclasses.field(default="", repr=False)
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    ca_file: str = ""
    ca_fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.cloud_id:
            for url in self.urls:
                if not url.startswith(("http://", "https://")):
                    raise ValueError(f"es_url: {url!r} must start with http:// or https://")
        if self.api_key and (self.username or self.password):
            raise ValueError("es_api_key and es_username/es_password: give one, not both")
        if bool(self.username) != bool(self.password):
            raise ValueError("es_username and es_password go together")
        if self.ca_file and self.ca_fingerprint:
            raise ValueError("es_ca_file and es_ca_fingerprint: give one, not both")
        if self.ca_file and not os.path.isfile(self.ca_file):
            raise ValueError(f"es_ca_file: {self.ca_file!r} is not a readable file")

    @property
    def urls(self) -> list[str]:
        """The node URLs (``es_url`` may list several, comma-separated)."""
        return [u.strip() for u in self.url.split(",") if u.strip()]

    @classmethod
    def from_config(cls, config: Any) -> EsConnection:
        """The connection of a configuration object with ``es_url``, ``es_api_key`` ...
        attributes (the receiver's); missing ones keep their defaults."""
        values = {
            name: getattr(config, "es_" + name)
            for name in ENV_KEYS
            if isinstance(getattr(config, "es_" + name, None), str)
        }
        return cls(**values)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, url: str | None = None
    ) -> EsConnection:
        """The connection the ``OTEL_AUDIT_ES_*`` variables describe; ``url`` (a command's
        ``--url``) wins over ``OTEL_AUDIT_ES_URL``."""
        env = os.environ if environ is None else environ
        values = {name: env[var] for name, var in ENV_KEYS.items() if env.get(var)}
        if url:
            values["url"] = url
        return cls(**values)

    def redacted(self) -> dict[str, str]:
        """The settings with secrets replaced, for logs and ``--check-config``."""
        out = dataclasses.asdict(self)
        for name in _SECRET:
            if out[name]:
                out[name] = "<redacted>"
        return out

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Elasticsearch`` / ``AsyncElasticsearch``."""
        options: dict[str, Any] = {}
        if self.cloud_id:
            options["cloud_id"] = self.cloud_id
        else:
            options["hosts"] = self.urls
        if self.api_key:
            options["api_key"] = self.api_key
        elif self.username:
            options["basic_auth"] = (self.username, self.password)
        if self.ca_file:
            options["ca_certs"] = self.ca_file
        elif self.ca_fingerprint:
            options["ssl_assert_fingerprint"] = self.ca_fingerprint.replace(":", "").lower()
        return options


def sync_client(connection: EsConnection, **options: Any) -> Elasticsearch:
    """A synchronous client; ``options`` (timeouts, serializers ...) are passed through."""
    return Elasticsearch(**connection.client_options(), **options)


def async_client(connection: EsConnection, **options: Any) -> AsyncElasticsearch:
    """An asyncio client; ``options`` (timeouts, serializers ...) are passed through."""
    return AsyncElasticsearch(**connection.client_options(), **options)


def describe_error(exc: BaseException, connection: EsConnection | None = None) -> str:
    """One sentence that names why talking to Elasticsearch failed."""
    where = f" at {connection.cloud_id or connection.url}" if connection else ""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, (TlsError, ssl.SSLError)):
            return (
                f"TLS handshake with Elasticsearch{where} failed ({_short(cause)}): check "
                "es_ca_file / es_ca_fingerprint against the CA that signed the cluster"
            )
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, es_exc.AuthenticationException):
        return (
            f"Elasticsearch{where} refused the credentials (401): check es_api_key or "
            "es_username / es_password"
        )
    if isinstance(exc, es_exc.AuthorizationException):
        return (
            f"Elasticsearch{where} denied the request (403), the role lacks a privilege: "
            + _short(exc)
        )
    if isinstance(exc, TransportConnectionError):
        return f"cannot reach Elasticsearch{where}: {_short(exc)}"
    return f"Elasticsearch{where}: {_short(exc)}"


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
