"""How a benchmark prints its figures: an aligned ``name  value`` table, or JSON."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["kv_table", "print_figures"]


def kv_table(figures: dict[str, Any]) -> str:
    """``figures`` as lines of ``name  value`` with the names padded to one width."""
    width = max((len(k) for k in figures), default=0)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in figures.items())


def print_figures(figures: dict[str, Any], *, as_json: bool) -> None:
    """Print ``figures`` as one JSON line, or as :func:`kv_table`."""
    print(json.dumps(figures) if as_json else kv_table(figures))
