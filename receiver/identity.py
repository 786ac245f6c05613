"""Writer identity: who may write which events, and how fast.

A writer authenticates with a bearer token (``authorization: Bearer <token>``, the gRPC
metadata and HTTP header the Collector's ``bearertokenauth`` extension sends) or with a
verified TLS client certificate whose subject commonName or subjectAltName is listed for
it. Tokens are configured as SHA-256 hex digests (``token_sha256``; ``otel-audit`` never
needs the token itself) and compared in constant time.

Each identity is allowed a set of ``service.name`` values and of tenants
(``audit.tenant.id``); ``*`` allows any, a tenant list that is empty allows records without
a tenant only. A record outside its writer's allowance is rejected on its own (OTLP
partial success, dead letter of kind ``writer``), the others of the request are stored.

With ``writers.required`` a request without a credential is refused whole
(UNAUTHENTICATED / 401); a credential that matches no identity is always refused. The
authenticated writer is stored in every event it writes (``writer.id``, ``writer.auth``),
a top-level field no record attribute can reach (attributes land below ``audit.*``).

Each identity has a token bucket of records per second (``rate_records_per_s``, burst
``burst_records``); a request that would overdraw it is refused whole with
RESOURCE_EXHAUSTED / 429 and a retry delay.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson

from otel_audit.integrity import leaf_hash
from receiver.errors import Overloaded, PermanentError

__all__ = [
    "CURRENT_WRITER",
    "WRITER_FIELD",
    "StoredFields",
    "Unauthenticated",
    "Writer",
    "WriterIdentity",
    "WriterRegistry",
    "WritersConfig",
    "hash_token",
    "header_value",
    "stamp_writer",
]

WRITER_FIELD = "writer"
"""Top-level field of the stored event that holds the authenticated writer; it sorts
after every field the schema writes (a test holds that), so it is appended last."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Unauthenticated(PermanentError):
    """No valid credential (gRPC UNAUTHENTICATED, HTTP 401); not retryable."""


def hash_token(token: str) -> str:
    """The ``token_sha256`` value for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class WriterIdentity:
    """One writer: how it authenticates and what it may write."""

    name: str = ""
    """Stored in ``writer.id`` of its events; letters, digits and ``._:@/-``."""
    token_sha256: tuple[str, ...] = ()
    """SHA-256 hex digests of its bearer tokens (several during a rotation)."""
    cert_names: tuple[str, ...] = ()
    """Client certificate names that identify it: ``CN=...``, ``DNS:...``, ``URI:...``."""
    services: tuple[str, ...] = ()
    """``service.name`` values it may send (``*`` = any)."""
    tenants: tuple[str, ...] = ()
    """``audit.tenant.id`` values it may send (``*`` = any; empty = untenanted only)."""
    rate_records_per_s: float = 0.0
    """Sustained records per second (0 = no limit)."""
    burst_records: int = 0
    """Bucket size (0 = one second of ``rate_records_per_s``, at least one request's worth
    of the largest batch is not guaranteed)."""


@dataclass(frozen=True, slots=True)
class WritersConfig:
    """The ``writers:`` section."""

    required: bool = False
    """Refuse requests without a credential (UNAUTHENTICATED / 401)."""
    identities: tuple[WriterIdentity, ...] = ()
    """The known writers."""
    anonymous_rate_records_per_s: float = 0.0
    """Token bucket for requests without a credential when they are allowed (0 = none)."""

    def validate(self) -> None:
        seen: set[str] = set()
        tokens: set[str] = set()
        certs: set[str] = set()
        for i, ident in enumerate(self.identities):
            where = f"identities[{i}]"
            if not _NAME.match(ident.name):
                raise ValueError(f"{where}.name: {ident.name!r} is not a valid writer name")
            if ident.name in seen:
                raise ValueError(f"{where}.name: {ident.name!r} is listed twice")
            seen.add(ident.name)
            if not ident.token_sha256 and not ident.cert_names:
                raise ValueError(f"{where}: needs token_sha256 or cert_names")
            for digest in ident.token_sha256:
                if not _HEX64.match(digest):
                    raise ValueError(
                        f"{where}.token_sha256: not a lowercase SHA-256 hex digest "
                        "(python -c 'import hashlib,sys;print(hashlib.sha256(sys.argv[1]"
                        ".encode()).hexdigest())' TOKEN)"
                    )
                if digest in tokens:
                    raise ValueError(f"{where}.token_sha256: the same token is listed twice")
                tokens.add(digest)
            for cert in ident.cert_names:
                if cert in certs:
                    raise ValueError(f"{where}.cert_names: {cert!r} is listed twice")
                certs.add(cert)
            if not ident.services:
                raise ValueError(f"{where}.services: list the service.name values (or '*')")
        if self.required and not self.identities:
            raise ValueError("identities: required is true but no identity is configured")


@dataclass(slots=True)
class _Bucket:
    rate: float
    size: float
    level: float
    stamp: float = field(default_factory=time.monotonic)

    def take(self, n: int) -> float:
        """0.0 when ``n`` tokens were taken, else the seconds until they would be."""
        now = time.monotonic()
        self.level = min(self.size, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        want = min(float(n), self.size)  # a request bigger than the bucket waits for a full one
        if self.level >= want:
            self.level -= n
            return 0.0
        return (want - self.level) / self.rate


def _bucket(rate: float, burst: int) -> _Bucket | None:
    if rate <= 0:
        return None
    size = float(burst) if burst > 0 else max(rate, 1.0)
    return _Bucket(rate, size, size)


class Writer:
    """An authenticated writer (or the anonymous one) for the length of a request."""

    __slots__ = (
        "_bucket",
        "any_service",
        "any_tenant",
        "auth",
        "name",
        "services",
        "stamp",
        "tenants",
    )

    def __init__(
        self,
        name: str,
        auth: str,
        services: Iterable[str] = ("*",),
        tenants: Iterable[str] = ("*",),
        bucket: _Bucket | None = None,
    ) -> None:
        self.name = name
        self.auth = auth
        self.services = frozenset(services)
        self.tenants = frozenset(tenants)
        self.any_service = "*" in self.services
        self.any_tenant = "*" in self.tenants
        self._bucket = bucket
        self.stamp: bytes | None = (
            orjson.dumps({"auth": auth, "id": name}, option=orjson.OPT_SORT_KEYS) if name else None
        )
        """The stored ``writer`` object as sorted JSON (None for the anonymous writer)."""

    @property
    def unrestricted(self) -> bool:
        return self.any_service and self.any_tenant

    def refusal(self, service: Any, tenant: Any) -> str | None:
        """Why this writer may not send a record of ``service``/``tenant``, or None."""
        if not self.any_service and service not in self.services:
            return (
                f"writer {self.name!r} may not send service.name {str(service)[:100]!r}"
                if service
                else f"writer {self.name!r} may not send records without service.name"
            )
        if not self.any_tenant:
            if tenant is None or tenant == "":
                if "" not in self.tenants and self.tenants:
                    return f"writer {self.name!r} must send audit.tenant.id"
            elif tenant not in self.tenants:
                return f"writer {self.name!r} may not send audit.tenant.id {str(tenant)[:100]!r}"
        return None

    def charge(self, records: int, retry_floor_s: float = 0.1) -> None:
        """Take ``records`` from the writer's rate bucket, or raise Overloaded."""
        if self._bucket is None or records <= 0:
            return
        wait = self._bucket.take(records)
        if wait > 0:
            raise Overloaded(
                f"writer {self.name or 'anonymous'!r} is over its rate limit "
                f"({self._bucket.rate:g} records/s); retry later",
                max(retry_floor_s, wait),
            )


CURRENT_WRITER: ContextVar[Writer | None] = ContextVar("otel_audit_writer", default=None)
"""The writer of the request being handled (read where the stored document is built)."""


class WriterRegistry:
    """Looks up writers by token or certificate names."""

    def __init__(self, config: WritersConfig) -> None:
        self.required = config.required
        self._by_token: dict[bytes, Writer] = {}
        self._by_cert: dict[str, Writer] = {}
        self._digests: list[bytes] = []
        for ident in config.identities:
            bucket = _bucket(ident.rate_records_per_s, ident.burst_records)
            tenants = ident.tenants or ("",)
            for digest in ident.token_sha256:
                w = Writer(ident.name, "token", ident.services, tenants, bucket)
                self._by_token[bytes.fromhex(digest)] = w
                self._digests.append(bytes.fromhex(digest))
            for cert in ident.cert_names:
                self._by_cert[cert] = Writer(ident.name, "mtls", ident.services, tenants, bucket)
        self.anonymous = Writer("", "none", bucket=_bucket(config.anonymous_rate_records_per_s, 0))
        self.enabled = (
            bool(config.identities) or self.required or config.anonymous_rate_records_per_s > 0
        )

    def authenticate(self, authorization: str | None, cert_names: Iterable[str] = ()) -> Writer:
        """The writer of a request: its bearer token first, then its certificate names;
        the anonymous writer when it has neither and none is required."""
        if not self._digests and not self._by_cert and not self.required:
            return self.anonymous  # no writers configured: credentials are not checked
        if authorization:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization must be 'Bearer <token>'")
            digest = hashlib.sha256(token.strip().encode("utf-8")).digest()
            found: Writer | None = None
            for known in self._digests:  # every digest compared, in constant time each
                if hmac.compare_digest(known, digest):
                    found = self._by_token[known]
            if found is None:
                raise Unauthenticated("the bearer token is not valid")
            return found
        for name in cert_names:
            writer = self._by_cert.get(name)
            if writer is not None:
                return writer
        if self.required:
            if cert_names:
                raise Unauthenticated("the client certificate names no known writer")
            raise Unauthenticated("a credential is required: send authorization: Bearer <token>")
        return self.anonymous


def header_value(metadata: Iterable[tuple[str, Any]] | Mapping[str, Any], name: str) -> str | None:
    """The first ``name`` value of gRPC metadata (pairs) or a mapping; str."""
    items = metadata.items() if isinstance(metadata, Mapping) else metadata
    for key, value in items:
        if key.lower() == name:
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


_WRITER_KEY = b',"' + WRITER_FIELD.encode() + b'":'
_DOC_END = b"}\n"


def stamp_writer(prepared: tuple[Any, ...], stamp: bytes) -> tuple[Any, ...]:
    """``prepared`` with ``"writer": stamp`` added as the document's last top-level key
    (``stamp`` is the writer object's sorted JSON) and its leaf hashed again."""
    index, doc_id, encoded, source_at, sha, leaf, timestamp = prepared
    if encoded[-2:] != _DOC_END:
        raise ValueError("a prepared document must end with '}\\n'")
    stamped = encoded[:-2] + _WRITER_KEY + stamp + _DOC_END
    new_leaf = leaf_hash(stamped[source_at:-1]) if leaf is not None else None
    return (index, doc_id, stamped, source_at, sha, new_leaf, timestamp)


def _string_after(data: bytes, object_key: bytes, key: bytes) -> tuple[bool, Any]:
    """Read ``"object_key":{... "key":"value"`` from sorted-key JSON without parsing it:
    (True, value or None) when the bytes settle it, (False, None) when they do not."""
    at = data.rfind(b'"' + object_key + b'":{')
    if at < 0:
        return True, None
    start = at + len(object_key) + 4
    found = data.find(b'"' + key + b'":"', start)
    if found < 0:
        return False, None
    if b"{" in data[start:found] or b"}" in data[start:found]:
        return False, None  # another object in between: let the parser decide
    begin = found + len(key) + 4
    end = data.find(b'"', begin)
    value = data[begin:end]
    if end < 0 or b"\\" in value:
        return False, None
    return True, value.decode("utf-8")


class StoredFields:
    """Reads the stored ``service.name`` and tenant back from prepared documents (the
    native decoder prepared them without building the record's fields).

    Prepared documents are plain sorted-key JSON whose client values are never objects, so
    the last ``"service":{`` (``"organization":{``) opens the field's own object. The bytes
    from there to the first ``}`` name the value; when they hold it whole they are
    remembered, so the records of one resource (or tenant) cost two searches and a lookup
    each. Whatever the bytes do not settle, the JSON parser decides."""

    __slots__ = ("_cache", "_keys", "_paths")

    _MAX_CACHED = 4096

    def __init__(self, paths: tuple[tuple[str, ...], tuple[str, ...]]) -> None:
        self._paths = paths
        self._keys = (
            tuple((b'"' + p[0].encode() + b'":{', p[1].encode()) for p in paths)
            if len(paths) == 2 and all(len(p) == 2 for p in paths)
            else None
        )
        self._cache: dict[bytes, Any] = {}

    def read(self, prepared: tuple[Any, ...]) -> tuple[Any, Any]:
        keys = self._keys
        if keys is None:
            return self._parse(prepared)
        encoded = prepared[2]
        cache = self._cache
        (opener1, _), (opener2, _) = keys
        at1 = encoded.rfind(opener1)
        at2 = encoded.rfind(opener2)
        region1 = encoded[at1 : encoded.find(b"}", at1)] if at1 >= 0 else None
        region2 = encoded[at2 : encoded.find(b"}", at2)] if at2 >= 0 else None
        first = cache.get(region1, cache) if region1 is not None else None
        second = cache.get(region2, cache) if region2 is not None else None
        if first is cache or second is cache:
            return self._settle(prepared, (region1, region2))
        return first, second

    def _settle(
        self, prepared: tuple[Any, ...], regions: tuple[bytes | None, ...]
    ) -> tuple[Any, Any]:
        """Read the values the cache does not hold yet, and remember them."""
        assert self._keys is not None
        cache = self._cache
        out: list[Any] = []
        for (opener, key), region in zip(self._keys, regions, strict=True):
            if region is None:
                out.append(None)
                continue
            value = cache.get(region, cache)
            if value is cache:
                settled, value = _string_after(region + b"}", opener[1:-3], key)
                if not settled:
                    return self._parse(prepared)
                if len(cache) >= self._MAX_CACHED:
                    cache.clear()
                cache[region] = value
            out.append(value)
        return out[0], out[1]

    def _parse(self, prepared: tuple[Any, ...]) -> tuple[Any, Any]:
        encoded, source_at = prepared[2], prepared[3]
        doc = orjson.loads(memoryview(encoded)[source_at:-1])
        out = []
        for path in self._paths:
            node: Any = doc
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            out.append(node)
        return out[0], out[1]
