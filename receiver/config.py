"""The receiver's configuration: frozen typed objects, loaded from YAML and the environment.

Field names are the YAML keys and, upper-cased with the ``OTEL_AUDIT_`` prefix, the
environment variables that override them (``es_url`` <- ``OTEL_AUDIT_ES_URL``). Units are in
the names. Defaults live only in the dataclass fields below. Precedence: defaults, then
the file, then the environment.

Other components' settings are nested sections (``integrity:``, ``query:``, ``spans:``),
each a frozen dataclass listed in :data:`SECTIONS`; a section's keys are overridden by
``OTEL_AUDIT_<SECTION>__<KEY>`` (double underscore). Unknown top-level keys,
unknown section keys, wrong types and bad endpoints are errors naming the key and the file.

Listening addresses default to loopback (``127.0.0.1``), as the OpenTelemetry Collector
does: exposing the receiver is a deliberate choice (``0.0.0.0:4317`` in a container).
An endpoint with an empty host (``:4317``) listens on every interface; port 0 picks a
free port (for tests).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from indexer.es_client import EsConnection
from indexer.lifecycle.config import LifecycleConfig
from indexer.mappings import template_settings_of
from indexer.query.config import QueryConfig
from indexer.query.console import ConsoleConfig
from indexer.spans import SpansConfig
from indexer.tls import TlsConfig
from receiver.identity import WritersConfig
from receiver.limits import LimitsConfig
from receiver.sealing.config import IntegrityConfig
from receiver.watch import WatchConfig

__all__ = [
    "ENV_PREFIX",
    "SECTIONS",
    "ConfigError",
    "ReceiverConfig",
    "config_as_dict",
    "load_config",
    "parse_endpoint",
]

ENV_PREFIX = "OTEL_AUDIT_"

SECTIONS: Mapping[str, type[Any]] = types.MappingProxyType(
    {
        "integrity": IntegrityConfig,
        "query": QueryConfig,
        "spans": SpansConfig,
        "lifecycle": LifecycleConfig,
        "console": ConsoleConfig,
        "watch": WatchConfig,
        "tls": TlsConfig,
        "writers": WritersConfig,
        "limits": LimitsConfig,
    }
)
"""The nested sections by YAML key.

A section is a frozen dataclass with defaults; its fields may be str, int, float, bool,
tuples of those, or nested dataclasses; a ``validate(self)`` method, when present, is
called after loading and may raise ValueError naming the key.
"""

_MIB = 1024 * 1024
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or wrong; the message names key and file."""


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """Everything ``otel-audit serve`` needs; one comment per field."""

    grpc_endpoint: str = "127.0.0.1:4317"
    """OTLP/gRPC listen address (host:port)."""
    http_endpoint: str = "127.0.0.1:4318"
    """OTLP/HTTP listen address; also serves /healthz, /readyz and /metrics."""
    admin_endpoint: str = ""
    """Optional second listener for /healthz, /readyz and /metrics only ("" = none)."""
    max_request_bytes: int = 64 * _MIB
    """Largest accepted request body, checked compressed and decompressed (413 over it)."""
    max_inflight_bytes: int = 256 * _MIB
    """Request bytes all requests together may hold; over it new requests get 429."""
    overload_retry_after_s: float = 1.0
    """Retry delay suggested to clients pushed back for overload."""
    es_url: str = "http://127.0.0.1:9200"
    """Elasticsearch base URL (several nodes: comma-separated)."""
    es_cloud_id: str = ""
    """Elastic Cloud deployment id, instead of ``es_url``."""
    es_api_key: str = field(default="", repr=False)
    """API key for Elasticsearch (``id:key`` or its base64 form); never logged."""
    es_username: str = ""
    """Basic-authentication user for Elasticsearch (with ``es_password``)."""
    es_password: str = field(default="", repr=False)
    """Basic-authentication password; never logged."""
    es_ca_file: str = ""
    """PEM file of the CA that signed the cluster's HTTPS certificate."""
    es_ca_fingerprint: str = ""
    """SHA-256 fingerprint of that CA, instead of ``es_ca_file``."""
    shards: int = 1
    """Primary shards of each new daily index (index templates)."""
    replicas: str = "0-1"
    """Replicas of each new index: a count (``"1"``) or an auto-expand range (``"0-1"``:
    none on a single node, one on a cluster; ``"1-all"``)."""
    refresh_interval_s: float = 1.0
    """How soon a written event becomes searchable (index templates)."""
    wait_for_active_shards: str = "1"
    """Shard copies that must be active before a write is attempted (``"1"`` .. ``"all"``);
    with replicas, ``"all"`` makes an acknowledged write one that reached every copy."""
    spool_dir: str = "spool"
    """Directory of the local spool used while Elasticsearch is unavailable."""
    spool_max_bytes: int = 1024 * _MIB
    """Spool size limit; when full and Elasticsearch is down, answers are 503."""
    bulk_max_docs: int = 1000
    """Documents per Elasticsearch bulk request at most."""
    bulk_max_bytes: int = 8 * _MIB
    """Body bytes per Elasticsearch bulk request at most."""
    bulk_flush_interval_ms: float = 5.0
    """How long a bulk request waits for more documents from concurrent requests."""
    bulk_timeout_s: float = 10.0
    """A bulk request slower than this counts as Elasticsearch unavailable: spool the batch."""
    max_inflight_bulks: int = 2
    """Bulk requests in flight at once (the next batch fills while one is sent)."""
    retry_after_s: float = 5.0
    """Retry delay suggested to clients when neither Elasticsearch nor the spool takes data."""
    max_event_age_days: int = 400
    """Events whose time is older than this many days are refused (dead-lettered with the
    reason): writers' timestamps choose the daily index, so this bounds the set of indices
    they can create (with the schema's ``max_future_s`` on the other side); 0: no bound."""
    shutdown_timeout_s: float = 30.0
    """Time allowed on SIGTERM to finish in-flight requests and flush."""
    log_level: str = "info"
    """One of debug, info, warning, error, critical."""
    query_api_endpoint: str = "127.0.0.1:8080"
    """Listen address of the query API."""
    consumer: str = "ingest"
    """Where log records go: ``ingest`` (Elasticsearch), ``null_sink`` (validate, build,
    discard; for benchmarks), ``discard`` or ``package.module:factory`` (called with this
    config)."""
    spans_consumer: str = "default"
    """Where spans go: ``default`` (the span store when installed), ``none`` (trace service
    off), ``null_sink``, ``discard`` or ``package.module:factory``."""
    sections: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """Registered nested sections by name (always present, defaults when not configured)."""
    source: str = field(default="defaults", compare=False)
    """Where the configuration came from, for messages."""

    def section(self, name: str, cls: type[T]) -> T:
        """The section ``name`` as its registered dataclass."""
        value = self.sections[name]
        if not isinstance(value, cls):
            raise TypeError(f"section {name!r} is {type(value).__name__}, not {cls.__name__}")
        return value

    def validate(self) -> None:
        """Cross-field rules; raise ValueError naming the key."""
        for key in ("grpc_endpoint", "http_endpoint", "query_api_endpoint"):
            parse_endpoint(getattr(self, key), key)
        if self.admin_endpoint:
            parse_endpoint(self.admin_endpoint, "admin_endpoint")
        if self.log_level not in _LOG_LEVELS:
            allowed = ", ".join(_LOG_LEVELS)
            raise ValueError(f"log_level: {self.log_level!r} is not one of {allowed}")
        if self.max_request_bytes < 1024:
            raise ValueError("max_request_bytes: must be at least 1024")
        if self.max_inflight_bytes < self.max_request_bytes:
            raise ValueError(
                "max_inflight_bytes: must be at least max_request_bytes "
                f"({self.max_request_bytes}), or no request of the maximum size could run"
            )
        tls = self.sections.get("tls")
        if isinstance(tls, TlsConfig):
            for key in ("grpc_endpoint", "http_endpoint", "query_api_endpoint"):
                tls.check_bind(key, parse_endpoint(getattr(self, key), key)[0])
        EsConnection.from_config(self)  # raises naming the es_* key
        template_settings_of(self)  # raises naming shards / replicas / refresh_interval_s
        w = self.wait_for_active_shards
        if not (w == "all" or (w.isdigit() and int(w) >= 1)):
            raise ValueError(f"wait_for_active_shards: {w!r} is not a count (1, 2 ...) or all")
        if self.bulk_max_docs < 1:
            raise ValueError("bulk_max_docs: must be at least 1")
        for key in ("consumer", "spans_consumer"):
            value = getattr(self, key)
            if not value:
                raise ValueError(f"{key}: must not be empty")


_TOP_LEVEL = frozenset(
    f.name for f in dataclasses.fields(ReceiverConfig) if f.name not in ("sections", "source")
)


def _check_sections(sections: Mapping[str, type[Any]]) -> None:
    for name, cls in sections.items():
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"section {name!r}: {cls!r} is not a dataclass")
        if name in _TOP_LEVEL:
            raise ValueError(f"section {name!r} clashes with a receiver key")


def parse_endpoint(value: str, key: str = "endpoint") -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6; empty host = every interface)."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"{key}: {value!r} is not host:port")
    host, _, port_text = value.rpartition(":")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"{key}: {value!r} has an unclosed [ in its host")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{key}: {value!r}: write IPv6 hosts in brackets, [::1]:4317")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{key}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{key}: port {port} is outside 0..65535")
    return (host or "0.0.0.0", port)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, from_env: bool) -> Any:
    """Check (YAML) or parse (environment strings) one value against its field type."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {type(value).__name__}")
        return tuple(_coerce(v, item_tp, f"{key}[{i}]", from_env) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ValueError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if tp is bool:
        if from_env and isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
    elif tp is int:
        if from_env and isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if from_env and isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise ValueError(f"{key}: unsupported field type {_type_name(tp)}")
    shown = repr(value) if from_env else type(value).__name__
    raise ValueError(f"{key}: expected {_type_name(tp)}, got {shown}")


def _field_types(cls: type[Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if f.init and f.name not in ("sections", "source")
    }


def _build(cls: type[T], values: Mapping[str, Any], where: str) -> T:
    types_ = _field_types(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in types_:
            raise ValueError(f"{path}: unknown key")
        kwargs[key] = _coerce(value, types_[key], path, from_env=False)
    return cls(**kwargs)


def _check_numbers(obj: Any, where: str) -> None:
    """Sizes, counts and durations (named by their unit) must not be negative."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        path = f"{where}.{f.name}" if where else f.name
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if f.name.endswith(("_bytes", "_ms", "_s", "_docs")) and value < 0:
                raise ValueError(f"{path}: must not be negative, got {value}")
        elif dataclasses.is_dataclass(value):
            _check_numbers(value, path)


def _env_overrides(
    env: Mapping[str, str], section_types: Mapping[str, type[Any]]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    top_types = _field_types(ReceiverConfig)
    for name, tp in top_types.items():
        env_name = ENV_PREFIX + name.upper()
        if env_name in env:
            top[name] = _coerce(env[env_name], tp, f"{name} (from {env_name})", from_env=True)
    for section, cls in section_types.items():
        for name, tp in _field_types(cls).items():
            env_name = f"{ENV_PREFIX}{section.upper()}__{name.upper()}"
            if env_name in env:
                label = f"{section}.{name} (from {env_name})"
                sections.setdefault(section, {})[name] = _coerce(
                    env[env_name], tp, label, from_env=True
                )
    return top, sections


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    sections: Mapping[str, type[Any]] = SECTIONS,
) -> ReceiverConfig:
    """Load and validate the configuration.

    ``path`` is a YAML file (optional), ``env`` the environment (``os.environ`` by default),
    ``overrides`` top-level values applied last (command-line flags), ``sections`` the
    nested sections to accept (:data:`SECTIONS`). Raises :class:`ConfigError` naming the
    key and the file.
    """
    _check_sections(sections)
    env = os.environ if env is None else env
    source = str(path) if path is not None else "defaults"
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of keys")
        raw = loaded

    try:
        top_raw: dict[str, Any] = {}
        section_raw: dict[str, Mapping[str, Any]] = {}
        for key, value in raw.items():
            if key in sections:
                if value is None:
                    value = {}
                if not isinstance(value, Mapping):
                    raise ValueError(f"{key}: a section must be a mapping")
                section_raw[key] = value
            elif key in _TOP_LEVEL:
                top_raw[key] = value
            else:
                known = ", ".join(sorted(_TOP_LEVEL | set(sections)))
                raise ValueError(f"{key}: unknown key (known: {known})")
        base = _build(ReceiverConfig, top_raw, "")
        built_sections = {
            name: _build(cls, section_raw.get(name, {}), name) for name, cls in sections.items()
        }
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None

    try:
        env_top, env_sections = _env_overrides(env, sections)
    except ValueError as exc:
        raise ConfigError(f"environment: {exc}") from None
    for name, values in env_sections.items():
        built_sections[name] = dataclasses.replace(built_sections[name], **values)

    extra = dict(overrides or {})
    try:
        for key, value in extra.items():
            if key not in _TOP_LEVEL:
                raise ValueError(f"{key}: unknown key")
            extra[key] = _coerce(value, _field_types(ReceiverConfig)[key], key, from_env=False)
    except ValueError as exc:
        raise ConfigError(f"command line: {exc}") from None

    config = dataclasses.replace(
        base,
        **{**env_top, **extra},
        sections=types.MappingProxyType(built_sections),
        source=source,
    )
    try:
        _check_numbers(config, "")
        config.validate()
        for name, value in built_sections.items():
            _check_numbers(value, name)
            check = getattr(value, "validate", None)
            if check is not None:
                try:
                    check()
                except ValueError as exc:
                    raise ValueError(f"{name}.{exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def config_as_dict(config: ReceiverConfig) -> dict[str, Any]:
    """The effective configuration as plain data (for ``serve --check-config --json``)."""
    out: dict[str, Any] = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name not in ("sections", "source")
    }
    for name, value in EsConnection.from_config(config).redacted().items():
        out["es_" + name] = value
    for name, value in config.sections.items():
        section = dataclasses.asdict(value)
        for f in dataclasses.fields(value):
            if not f.repr and section.get(f.name):  # secrets are declared repr=False
                section[f.name] = "<redacted>"
        out[name] = section
    return out
