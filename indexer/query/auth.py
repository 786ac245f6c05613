"""Bearer-token authentication and role checks of the query API.

Only SHA-256 hashes of tokens are configured. A presented token is hashed and compared
with every configured hash in constant time (no early exit), so response timing tells an
attacker nothing about how close a guess was or which entry it nearly matched.

Missing or unknown token: 401 with ``WWW-Authenticate: Bearer``. Known token without the
role the route needs: 403 (``error="insufficient_scope"``).
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
        return Principal(subject=found.subject, roles=frozenset(found.roles))

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
