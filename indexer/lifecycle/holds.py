"""Legal holds: signed records in the cold store that stop every deletion they touch.

A hold names any of a tenant, an actor, a resource (type and/or id) and a time range;
it touches a day when the day overlaps the range and holds at least one event matching
every other criterion given (a hold with no criteria but the range touches every day in
it). While a hold touches a day, neither its hot index nor its archive is deleted.

Holds live in the cold store beside the archives (``holds/<id>.json``; a release is
``holds/<id>.release.json``), each signed with the receiver's key, and every add and
release is also an audit event. A release that does not verify releases nothing; a hold
whose signature does not verify still holds (and is reported): failing safe.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from indexer.lifecycle.signed import SignedRecordError, parse_record, sign_record, verify_record
from indexer.lifecycle.store import ColdStore
from otel_audit.integrity import Ed25519PrivateKey, Keyring

__all__ = ["Hold", "HoldError", "add_hold", "list_holds", "release_hold"]

_DAY_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class HoldError(ValueError):
    """A hold cannot be added or released; the message says why."""


@dataclass(frozen=True, slots=True)
class Hold:
    """One legal hold. Dates are UTC days ``YYYY-MM-DD`` (inclusive)."""

    hold_id: str
    reason: str
    tenant: str = ""
    actor: str = ""
    resource_type: str = ""
    resource_id: str = ""
    from_day: str = ""
    to_day: str = ""
    created_ms: int = 0
    created_by: str = ""
    released: bool = False
    released_ms: int = 0
    released_by: str = ""
    problems: tuple[str, ...] = field(default=())
    """Why the record did not verify (the hold still applies)."""

    def criteria(self) -> dict[str, str]:
        """The event fields a touched day must hold (stored field -> value)."""
        out = {}
        if self.tenant:
            out["organization.id"] = self.tenant
        if self.actor:
            out["user.id"] = self.actor
        if self.resource_type:
            out["audit.resource.type"] = self.resource_type
        if self.resource_id:
            out["audit.resource.id"] = self.resource_id
        return out

    def covers_day(self, day: str) -> bool:
        """Whether ``day`` (``YYYY.MM.DD``) is inside the hold's time range."""
        iso = day.replace(".", "-")
        return (not self.from_day or iso >= self.from_day) and (
            not self.to_day or iso <= self.to_day
        )

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready form (``otel-audit hold list --json``)."""
        return {
            "id": self.hold_id,
            "reason": self.reason,
            "tenant": self.tenant,
            "actor": self.actor,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "from": self.from_day,
            "to": self.to_day,
            "created_ms": self.created_ms,
            "created_by": self.created_by,
            "released": self.released,
            "released_ms": self.released_ms,
            "released_by": self.released_by,
            "problems": list(self.problems),
        }


def _key(hold_id: str, release: bool = False) -> str:
    return f"holds/{hold_id}{'.release' if release else ''}.json"


def add_hold(
    store: ColdStore,
    key: Ed25519PrivateKey,
    *,
    reason: str,
    created_by: str,
    now_ms: int,
    tenant: str = "",
    actor: str = "",
    resource_type: str = "",
    resource_id: str = "",
    from_day: str = "",
    to_day: str = "",
    hold_id: str = "",
) -> Hold:
    """Sign and store a new hold; returns it."""
    if not reason.strip():
        raise HoldError("a hold needs a reason (case or matter reference)")
    for name, value in (("from", from_day), ("to", to_day)):
        if value and not _DAY_RE.match(value):
            raise HoldError(f"--{name}: {value!r} is not a date YYYY-MM-DD")
    if from_day and to_day and from_day > to_day:
        raise HoldError(f"--from {from_day} is after --to {to_day}")
    hold_id = hold_id or uuid.uuid4().hex[:12]
    if not _ID_RE.match(hold_id):
        raise HoldError(f"hold id {hold_id!r}: use 1-64 of letters, digits and . _ -")
    if store.get_bytes(_key(hold_id)) is not None:
        raise HoldError(f"hold {hold_id} exists already")
    hold = Hold(
        hold_id=hold_id,
        reason=reason.strip(),
        tenant=tenant,
        actor=actor,
        resource_type=resource_type,
        resource_id=resource_id,
        from_day=from_day,
        to_day=to_day,
        created_ms=now_ms,
        created_by=created_by,
    )
    body = {"kind": "legal_hold", **hold.to_json_dict()}
    for k in ("released", "released_ms", "released_by", "problems"):
        body.pop(k)
    store.put_bytes(
        _key(hold_id), orjson.dumps(sign_record(body, key), option=orjson.OPT_SORT_KEYS)
    )
    return hold


def release_hold(
    store: ColdStore, key: Ed25519PrivateKey, hold_id: str, *, released_by: str, now_ms: int
) -> Hold:
    """Sign and store the release of a hold; returns the released hold."""
    holds = {h.hold_id: h for h in list_holds(store, Keyring([key.public_key()]))}
    hold = holds.get(hold_id)
    if hold is None:
        raise HoldError(f"no hold {hold_id!r}")
    if hold.released:
        raise HoldError(f"hold {hold_id} was released already")
    body = {
        "kind": "legal_hold_release",
        "id": hold_id,
        "released_ms": now_ms,
        "released_by": released_by,
    }
    store.put_bytes(
        _key(hold_id, release=True),
        orjson.dumps(sign_record(body, key), option=orjson.OPT_SORT_KEYS),
    )
    return Hold(
        **{**_fields(hold), "released": True, "released_ms": now_ms, "released_by": released_by}
    )


def _fields(hold: Hold) -> dict[str, Any]:
    return {name: getattr(hold, name) for name in Hold.__slots__}


def list_holds(store: ColdStore, keyring: Keyring) -> list[Hold]:
    """Every hold in the store, released or not, oldest first."""
    keys = store.list("holds")
    names = {k.removeprefix("holds/") for k in keys}
    out: list[Hold] = []
    for key in keys:
        name = key.removeprefix("holds/")
        if "/" in name or not name.endswith(".json") or name.endswith(".release.json"):
            continue
        hold_id = name.removesuffix(".json")
        out.append(_load(store, keyring, hold_id, f"{hold_id}.release.json" in names))
    out.sort(key=lambda h: (h.created_ms, h.hold_id))
    return out


def _load(store: ColdStore, keyring: Keyring, hold_id: str, has_release: bool) -> Hold:
    problems: list[str] = []
    record: Mapping[str, Any] = {}
    try:
        record = parse_record(store.get_bytes(_key(hold_id)), f"hold {hold_id}")
        verify_record(record, keyring, "legal_hold")
    except SignedRecordError as exc:
        problems.append(str(exc))
    hold = Hold(
        hold_id=hold_id,
        reason=str(record.get("reason", "")),
        tenant=str(record.get("tenant", "")),
        actor=str(record.get("actor", "")),
        resource_type=str(record.get("resource_type", "")),
        resource_id=str(record.get("resource_id", "")),
        from_day=str(record.get("from", "")),
        to_day=str(record.get("to", "")),
        created_ms=int(record.get("created_ms", 0) or 0),
        created_by=str(record.get("created_by", "")),
        problems=tuple(problems),
    )
    if not has_release:
        return hold
    try:
        release = parse_record(store.get_bytes(_key(hold_id, True)), f"release of {hold_id}")
        verify_record(release, keyring, "legal_hold_release")
        if release.get("id") != hold_id:
            raise SignedRecordError(f"the release names hold {release.get('id')!r}")
    except SignedRecordError as exc:
        # A release that does not verify releases nothing.
        return Hold(**{**_fields(hold), "problems": (*problems, f"release ignored: {exc}")})
    return Hold(
        **{
            **_fields(hold),
            "released": True,
            "released_ms": int(release.get("released_ms", 0)),
            "released_by": str(release.get("released_by", "")),
        }
    )
