"""Callers waiting for reply events on the bus, keyed by correlation id.

Each waiting caller has an inbox (a queue): a unary call takes the first final event from it, a
stream takes generation chunks and then the final event. Events for nobody waiting (another
replica's caller, a caller that gave up, a redelivered duplicate) are dropped, so a reply reaches
its caller at most once.
"""

from __future__ import annotations

import asyncio
from typing import Any


class PendingReplies:
    def __init__(self) -> None:
        self._inboxes: dict[str, asyncio.Queue[Any]] = {}

    def expect(self, correlation_id: str) -> asyncio.Queue[Any]:
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._inboxes[correlation_id] = inbox
        return inbox

    def deliver(self, correlation_id: str, event: Any) -> bool:
        inbox = self._inboxes.get(correlation_id)
        if inbox is None:
            return False
        inbox.put_nowait(event)
        return True

    def forget(self, correlation_id: str) -> None:
        self._inboxes.pop(correlation_id, None)

    def __len__(self) -> int:
        return len(self._inboxes)
