"""The auditor's console: a web UI served by the query API (see ``README.md`` here)."""

from indexer.query.console.config import ConsoleConfig, ConsoleConfigError, console_config_of
from indexer.query.console.routes import ApiAccess, ScheduledVerifyStatus, add_console
from indexer.query.console.witnesses import WitnessStatus, WitnessView

__all__ = [
    "ApiAccess",
    "ConsoleConfig",
    "ConsoleConfigError",
    "ScheduledVerifyStatus",
    "WitnessStatus",
    "WitnessView",
    "add_console",
    "console_config_of",
]
