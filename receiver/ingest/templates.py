"""Index templates before the first write: a daily index created without them would get
guessed mappings."""

from __future__ import annotations

import asyncio
import logging

from elastic_transport import TransportError
from elasticsearch import AsyncElasticsearch
from elasticsearch import exceptions as es_exc

from indexer.templates import registered_templates

__all__ = ["TemplateGate"]

_log = logging.getLogger(__name__)


class TemplateGate:
    """Installs every index template once; until that succeeds, writes must wait."""

    def __init__(self, es: AsyncElasticsearch, timeout_s: float) -> None:
        self._es = es
        self._timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._ok = False

    async def ensure(self) -> bool:
        """True once the templates are installed (tried again on each call until then)."""
        if self._ok:
            return True
        async with self._lock:
            if self._ok:
                return True
            try:
                for name, body in registered_templates().items():
                    await asyncio.wait_for(
                        self._es.indices.put_index_template(name=name, **body), self._timeout_s
                    )
            except (TimeoutError, TransportError, es_exc.ApiError, OSError) as exc:
                _log.warning("cannot install index templates yet: %s", exc)
                return False
            self._ok = True
            return True
