"""Import saved objects into Kibana through its saved-objects import API.

``POST {kibana}[/s/{space}]/api/saved_objects/_import?overwrite=true`` with the header
``kbn-xsrf: true`` and the NDJSON as the multipart field ``file``. Kibana answers 200 with
a per-object result (``successResults``, ``errors``) even when some objects fail, so the
outcome is read object by object; anything other than 200 is a request-level failure.

::

    KibanaError               request failed: unreachable, auth, 4xx/5xx, unreadable answer
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

__all__ = [
    "ImportReport",
    "KibanaAuth",
    "KibanaError",
    "ObjectResult",
    "import_saved_objects",
    "import_url",
    "parse_import_response",
    "wait_until_available",
]


class KibanaError(Exception):
    """The import request itself failed; the message says how."""


@dataclass(frozen=True, slots=True)
class KibanaAuth:
    """Basic credentials or an API key (``id:key`` base64, as Kibana issues it); or none;
    and the CA that signed Kibana's HTTPS certificate when it is not a public one."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    ca_file: str | None = None

    def connector(self) -> aiohttp.TCPConnector:
        """A connector trusting ``ca_file`` (or the system CAs without one)."""
        if not self.ca_file:
            return aiohttp.TCPConnector()
        return aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=self.ca_file))

    def headers(self) -> dict[str, str]:
        if self.api_key:
            return {"Authorization": f"ApiKey {self.api_key}"}
        if self.user is not None:
            pair = f"{self.user}:{self.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        return {}


@dataclass(frozen=True, slots=True)
class ObjectResult:
    """What happened to one imported object."""

    type: str
    id: str
    title: str
    ok: bool
    error: str = ""

    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "id": self.id, "title": self.title}
        out["status"] = "ok" if self.ok else "error"
        if not self.ok:
            out["error"] = self.error
        return out


@dataclass(frozen=True, slots=True)
class ImportReport:
    """Kibana's answer to one import, object by object."""

    success: bool
    objects: tuple[ObjectResult, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when Kibana reports success and no object failed."""
        return self.success and all(o.ok for o in self.objects)

    @property
    def error_count(self) -> int:
        return sum(1 for o in self.objects if not o.ok)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "success_count": sum(1 for o in self.objects if o.ok),
            "error_count": self.error_count,
            "objects": [o.to_json_dict() for o in self.objects],
            "warnings": list(self.warnings),
        }


def import_url(kibana_url: str, space: str | None = None, *, overwrite: bool = True) -> str:
    """The import endpoint for ``space`` (None or ``default``: the default space)."""
    base = kibana_url.rstrip("/")
    if space and space != "default":
        base += "/s/" + quote(space, safe="")
    return f"{base}/api/saved_objects/_import?overwrite={'true' if overwrite else 'false'}"


def _describe_error(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", "unknown"))
    if kind == "missing_references":
        refs = error.get("references") or []
        names = ", ".join(f"{r.get('type')}/{r.get('id')}" for r in refs if isinstance(r, dict))
        return f"missing_references: {names}" if names else kind
    message = error.get("message") or error.get("reason")
    return f"{kind}: {message}" if message else kind


def parse_import_response(body: Mapping[str, Any]) -> ImportReport:
    """Read Kibana's 200 answer into an :class:`ImportReport`."""
    results: list[ObjectResult] = []
    for item in body.get("successResults") or []:
        meta = item.get("meta") or {}
        results.append(
            ObjectResult(
                type=str(item.get("type", "")),
                id=str(item.get("destinationId") or item.get("id", "")),
                title=str(meta.get("title", "")),
                ok=True,
            )
        )
    for item in body.get("errors") or []:
        meta = item.get("meta") or {}
        results.append(
            ObjectResult(
                type=str(item.get("type", "")),
                id=str(item.get("id", "")),
                title=str(item.get("title") or meta.get("title", "")),
                ok=False,
                error=_describe_error(item.get("error") or {}),
            )
        )
    warnings = tuple(
        str(w.get("message", w)) if isinstance(w, dict) else str(w)
        for w in body.get("warnings") or []
    )
    success = bool(body.get("success"))
    return ImportReport(success=success, objects=tuple(results), warnings=warnings)


def _request_error(status: int, text: str) -> KibanaError:
    detail = text.strip()
    try:
        body = json.loads(text)
        if isinstance(body, dict) and body.get("message"):
            detail = str(body["message"])
    except ValueError:
        pass
    hint = {401: " (check --user/--password or --api-key)", 403: " (not allowed)"}.get(status, "")
    return KibanaError(f"Kibana answered HTTP {status}{hint}: {detail[:500]}")


async def import_saved_objects(
    kibana_url: str,
    ndjson: bytes,
    *,
    space: str | None = None,
    auth: KibanaAuth | None = None,
    overwrite: bool = True,
    timeout_s: float = 60.0,
    filename: str = "otel-audit.ndjson",
) -> ImportReport:
    """Send ``ndjson`` to Kibana's import API and return the per-object outcome."""
    url = import_url(kibana_url, space, overwrite=overwrite)
    form = aiohttp.FormData()
    form.add_field("file", ndjson, filename=filename, content_type="application/ndjson")
    headers = {"kbn-xsrf": "true", **(auth or KibanaAuth()).headers()}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(
                timeout=timeout, connector=(auth or KibanaAuth()).connector()
            ) as session,
            session.post(url, data=form, headers=headers) as resp,
        ):
            text = await resp.text()
            if resp.status != 200:
                raise _request_error(resp.status, text)
    except aiohttp.ClientError as exc:
        raise KibanaError(f"cannot reach Kibana at {kibana_url}: {exc}") from None
    except TimeoutError:
        raise KibanaError(f"Kibana at {kibana_url} did not answer within {timeout_s:g}s") from None
    try:
        body = json.loads(text)
    except ValueError:
        raise KibanaError(f"Kibana's answer is not JSON: {text[:200]!r}") from None
    if not isinstance(body, dict):
        raise KibanaError(f"Kibana's answer is not a JSON object: {text[:200]!r}")
    return parse_import_response(body)


async def wait_until_available(
    kibana_url: str,
    *,
    auth: KibanaAuth | None = None,
    timeout_s: float,
    interval_s: float = 2.0,
    progress: Any = None,
) -> None:
    """Poll ``/api/status`` until Kibana answers 200 (it answers 503 while starting).

    ``progress`` (a callable taking a string) hears about each failed attempt.
    """
    url = kibana_url.rstrip("/") + "/api/status"
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    headers = (auth or KibanaAuth()).headers()
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=10), connector=(auth or KibanaAuth()).connector()
    ) as session:
        while True:
            try:
                async with session.get(url, headers=headers) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = str(exc) or type(exc).__name__
            if time.monotonic() + interval_s > deadline:
                raise KibanaError(
                    f"Kibana at {kibana_url} was not available within {timeout_s:g}s ({last})"
                )
            if progress is not None:
                progress(f"waiting for Kibana at {kibana_url}: {last}")
            await asyncio.sleep(interval_s)
