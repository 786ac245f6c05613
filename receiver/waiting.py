"""Waiting on an asyncio event with a timeout, without losing a cancellation.

On Python 3.11 ``asyncio.wait_for`` swallows a cancellation that arrives just as the
awaited future completes (CPython gh-86296, fixed in 3.12). Long-lived loops that wait on
an event another task sets and that are stopped by ``cancel()`` then never stop, and the
shutdown that awaits them hangs. ``asyncio.timeout`` does not have that race.
"""

from __future__ import annotations

import asyncio

__all__ = ["wait_event"]


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` passes; True when it was set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(max(0.0, timeout_s)):
            await event.wait()
    except TimeoutError:
        return False
    return True
