"""The exit codes of every ``otel-audit`` command: one convention, so scripts can branch.

===  ============  ==========================================================================
 0   OK            done; for a check: nothing found
 1   FINDINGS      the command ran and found a problem: tampering (``verify``), an invalid
                   proof, a stale generated file (``--check``), objects Kibana refused
 2   USAGE         bad arguments, an unreadable or invalid config, key or input file
 3   UNAVAILABLE   something it needs could not be reached or refused it: Elasticsearch,
                   Kibana, the query API (an HTTP 5xx, 401 or 403 too); ``local-es status``
                   of a stopped node; ``serve`` that could not start (a port in use)
 4   STALE         ``verify``: nothing was altered, but the newest checkpoint is older than
                   the chain's heartbeat allows (data may have been cut off)
130  INTERRUPTED   Ctrl-C
===  ============  ==========================================================================
"""

from __future__ import annotations

import enum

__all__ = ["Exit"]


class Exit(enum.IntEnum):
    """See the module docstring."""

    OK = 0
    FINDINGS = 1
    USAGE = 2
    UNAVAILABLE = 3
    STALE = 4
    INTERRUPTED = 130
