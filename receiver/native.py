"""The one module that loads the native extension ``otel_audit_native`` (built from native/).

The extension decodes OTLP log protobuf (and prepares plain records' writes), writes the
sealer's journal lines and extends Merkle compact ranges. Everything it does has a
pure-Python reference that takes over when it is missing, stale or switched off:

- missing: ``make install`` on a machine without cargo installs the receiver without it;
- stale: an extension whose ``__version__`` is not :data:`NATIVE_VERSION` (an older build
  left in the virtualenv) is ignored rather than trusted;
- off: ``OTEL_AUDIT_NATIVE_DECODER=0`` (:data:`ENV_NATIVE_DECODER`) forces Python.

:data:`DESCRIPTION` says which is active and why, and ``otel-audit serve`` logs it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import ModuleType

__all__ = [
    "DESCRIPTION",
    "ENABLED",
    "ENV_NATIVE_DECODER",
    "NATIVE_VERSION",
    "describe",
    "module",
]

ENV_NATIVE_DECODER = "OTEL_AUDIT_NATIVE_DECODER"
"""``0`` runs the pure-Python paths even when the extension is installed."""

NATIVE_VERSION = "0.10.0"
"""The extension release whose semantics the Python references were checked against."""


def _import() -> tuple[ModuleType | None, str]:
    """(the extension module or None, why not)."""
    try:
        import otel_audit_native
    except ImportError as exc:
        return None, f"otel_audit_native is not importable: {exc}"
    version = getattr(otel_audit_native, "__version__", "unknown")
    if version != NATIVE_VERSION:
        return None, (
            f"otel_audit_native {version} is installed, {NATIVE_VERSION} expected"
            " (reinstall native/)"
        )
    return otel_audit_native, ""


def describe(environ: Mapping[str, str], native: ModuleType | None, why: str) -> str:
    """``native (otel_audit_native X)`` or ``python (why)``: which path runs."""
    if environ.get(ENV_NATIVE_DECODER, "").strip().lower() in ("0", "false", "no", "off"):
        return f"python ({ENV_NATIVE_DECODER}={environ[ENV_NATIVE_DECODER]})"
    if native is None:
        return f"python ({why})"
    return f"native (otel_audit_native {native.__version__})"


_native, _missing = _import()
DESCRIPTION = describe(os.environ, _native, _missing)
"""Which implementation is active and, for Python, why; logged at start-up."""
ENABLED: bool = DESCRIPTION.startswith("native")
"""True when the extension is used."""


def module() -> ModuleType | None:
    """The extension when it is used, else None."""
    return _native if ENABLED else None
