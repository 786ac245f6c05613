"""Index templates before the first write: a daily index created without them would get
guessed mappings.

The receiver installs what is missing or older and leaves alone a template that is
identical, newer (a newer release's receiver runs beside this one) or changed by an
operator: it logs which, and writes on (the template on the cluster still maps the
indices). ``otel-audit templates install --force`` is the way to replace such a template.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from elastic_transport import TransportError
from elasticsearch import AsyncElasticsearch
from elasticsearch import exceptions as es_exc

from indexer.es_client import describe_error
from indexer.mappings import TemplateSettings
from indexer.templates import plan_install, registered_templates, stamped

__all__ = ["TemplateGate"]

_log = logging.getLogger(__name__)


class TemplateGate:
    """Installs every index template once; until that succeeds, writes must wait."""

    def __init__(
        self, es: AsyncElasticsearch, timeout_s: float, settings: TemplateSettings | None = None
    ) -> None:
        self._es = es
        self._timeout_s = timeout_s
        self._settings = settings
        self._lock = asyncio.Lock()
        self._ok = False
        self.outcomes: dict[str, str] = {}
        """What the last install did per template (create, update, unchanged, refuse)."""

    async def ensure(self) -> bool:
        """True once the templates are installed (tried again on each call until then)."""
        if self._ok:
            return True
        async with self._lock:
            if self._ok:
                return True
            try:
                for name, body in registered_templates(settings=self._settings).items():
                    await self._install(name, stamped(body))
            except (TimeoutError, TransportError, es_exc.ApiError, OSError) as exc:
                hint = ""
                if isinstance(exc, es_exc.AuthorizationException):
                    hint = (
                        "; this user may not manage index templates: run "
                        "`otel-audit templates install` as the setup user (docs/security.md)"
                    )
                _log.warning("cannot install index templates yet: %s%s", describe_error(exc), hint)
                return False
            self._ok = True
            return True

    async def _install(self, name: str, ours: dict[str, Any]) -> None:
        existing: dict[str, Any] | None = None
        try:
            resp = await asyncio.wait_for(
                self._es.indices.get_index_template(name=name), self._timeout_s
            )
            found = resp.get("index_templates") or []
            existing = dict(found[0]["index_template"]) if found else None
        except es_exc.NotFoundError:
            existing = None
        action, why = plan_install(name, ours, existing)
        self.outcomes[name] = action
        if action == "refuse":
            _log.error("index template left as it is: %s", why, extra={"template": name})
            return
        if action == "unchanged":
            return
        await asyncio.wait_for(
            self._es.indices.put_index_template(name=name, **ours), self._timeout_s
        )
        _log.info("index template %sd", action, extra={"template": name})
