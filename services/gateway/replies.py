"""Waiting for a reply event on the bus, keyed by correlation id."""

from __future__ import annotations

import asyncio
from typing import Any


class PendingReplies:
    """Futures of callers waiting for an event with their correlation id."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[Any]] = {}

    def expect(self, correlation_id: str) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        return future

    def resolve(self, correlation_id: str, event: Any) -> bool:
        future = self._waiting.pop(correlation_id, None)
        if future is None or future.done():
            return False
        future.set_result(event)
        return True

    def forget(self, correlation_id: str) -> None:
        future = self._waiting.pop(correlation_id, None)
        if future is not None and not future.done():
            future.cancel()

    def __len__(self) -> int:
        return len(self._waiting)
