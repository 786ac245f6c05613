"""Bearer-token authentication and role checks of the query API.

Only SHA-256 hashes of tokens are configured. A presented token is hashed and compared
with every configured hash in constant time (no early exit), so response timing tells an
attacker nothing about how close a guess was or which entry it nearly matched.

Missing or unknown token: 401 with ``WWW-Authenticate: Bearer``. Known token without the
role the route needs: 403 (``error="insufficient_scope"``). A token may be limited to some
tenants (:attr:`Principal.tenants`); the routes apply that limit to every search they
send to Elasticsearch (:func:`indexer.query.filters.scope_filter`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from indexer.query.config import TokenEntry

__all__ = [
    "AuthError",
    "Authenticator",
    "Principal",
    "generate_token",
    "hash_token",
]

REALM = "otel-audit"


def hash_token(token: str) -> str:
    """Lowercase hex SHA-256 of ``token`` (what goes into the config)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def generate_token() -> str:
    """A new random token (256 bits, URL-safe)."""
    return "oat_" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is from."""

    subject: str
    roles: frozenset[str]
    tenants: frozenset[str] | None = None
    """The tenants whose events this principal may read; None: every tenant."""

    @property
    def scoped(self) -> bool:
        """Whether reads are limited to :attr:`tenants`."""
        return self.tenants is not None

    def has_role(self, role: str) -> bool:
        """``admin`` implies every other role, ``reader`` implies ``stats``."""
        if role in self.roles or "admin" in self.roles:
            return True
        return role == "stats" and "reader" in self.roles


class AuthError(Exception):
    """Authentication or authorization failed; carries the HTTP status and header."""

    def __init__(self, status: int, message: str, error_code: str, subject: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.subject = subject
        self.www_authenticate = (
            f'Bearer realm="{REALM}", error="{error_code}", error_description="{message}"'
        )


class Authenticator:
    """Maps ``Authorization`` header values to principals."""

    def __init__(self, tokens: tuple[TokenEntry, ...]) -> None:
        self._entries = [(bytes.fromhex(t.sha256), t) for t in tokens]

    def authenticate(self, header: str | None) -> Principal:
        """The principal of a ``Bearer`` header, or :class:`AuthError` (401)."""
        if not header:
            raise AuthError(401, "a bearer token is required", "invalid_request")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(401, "expected 'Authorization: Bearer <token>'", "invalid_request")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: TokenEntry | None = None
        for expected, entry in self._entries:
            # Every entry is compared; the match is remembered, not returned early.
            if hmac.compare_digest(digest, expected):
                found = entry
        if found is None:
            raise AuthError(401, "the token is not valid", "invalid_token")
        return Principal(
            subject=found.subject, roles=frozenset(found.roles), tenants=found.tenant_scope
        )

    def authorize(self, header: str | None, role: str) -> Principal:
        """Authenticate and require ``role`` (403 :class:`AuthError` without it)."""
        principal = self.authenticate(header)
        if not principal.has_role(role):
            raise AuthError(
                403,
                f"the token lacks the {role!r} role",
                "insufficient_scope",
                subject=principal.subject,
            )
        return principal


class RefusalLimiter:
    """Counts refused requests (401, 403) per client address in one-minute windows.

    Past ``per_minute`` refusals an address is locked out until its window ends: every
    request from it is answered 429 before any token is checked, so guessing tokens gets
    no answers and a refusal flood does not turn into a flood of audit records. The table
    holds at most ``max_addresses`` entries (the oldest windows are dropped first).
    """

    WINDOW_S = 60.0

    def __init__(self, per_minute: int, max_addresses: int = 10_000) -> None:
        self._limit = per_minute
        self._max = max_addresses
        self._windows: dict[str, tuple[float, int]] = {}

    def retry_after(self, address: str, now: float) -> int:
        """Seconds until ``address`` may try again; 0 when it is not locked out."""
        entry = self._windows.get(address)
        if entry is None:
            return 0
        start, count = entry
        if now - start >= self.WINDOW_S:
            del self._windows[address]
            return 0
        if count < self._limit:
            return 0
        return max(1, int(start + self.WINDOW_S - now + 0.999))

    def refused(self, address: str, now: float) -> bool:
        """Count one refusal; True when it is still within the limit (answer and record
        it), False when the address has just gone over (answer 429)."""
        start, count = self._windows.get(address, (now, 0))
        if now - start >= self.WINDOW_S:
            start, count = now, 0
        self._windows.pop(address, None)
        self._windows[address] = (start, count + 1)  # re-inserted: newest last
        if len(self._windows) > self._max:
            del self._windows[next(iter(self._windows))]
        return count + 1 <= self._limit
