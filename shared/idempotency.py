"""Idempotency by event id: a redelivered event (same event id) is processed once.

Kafka delivers at least once; this store turns that into once-per-process-lineage as the
application sees it. A service that runs several replicas relies on idempotent sinks as well
(deterministic Weaviate object ids, ClickHouse ReplacingMergeTree by event id), because a
partition can move between replicas.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import OrderedDict
from pathlib import Path
from typing import Protocol


class IdempotencyStore(Protocol):
    async def seen(self, key: str) -> bool:
        """True when `key` was marked done before."""
        ...

    async def mark(self, key: str) -> None:
        """Record `key` as done."""
        ...

    async def close(self) -> None: ...


class MemoryIdempotencyStore:
    """Bounded LRU of recent keys; survives redeliveries, not restarts."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[str, None] = OrderedDict()

    async def seen(self, key: str) -> bool:
        if key in self._keys:
            self._keys.move_to_end(key)
            return True
        return False

    async def mark(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self._capacity:
            self._keys.popitem(last=False)

    async def close(self) -> None:
        self._keys.clear()


class SqliteIdempotencyStore:
    """Keys in a local SQLite file (WAL), so a restarted process still knows what it finished."""

    def __init__(self, path: Path, capacity: int = 1_000_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._capacity = capacity
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS processed (key TEXT PRIMARY KEY, seq INTEGER)")
        # MAX(seq) runs on every mark: without an index it scans the whole table.
        self._db.execute("CREATE INDEX IF NOT EXISTS processed_seq ON processed (seq)")
        self._lock = asyncio.Lock()
        self._marks = 0

    async def seen(self, key: str) -> bool:
        row = self._db.execute("SELECT 1 FROM processed WHERE key = ?", (key,)).fetchone()
        return row is not None

    async def mark(self, key: str) -> None:
        async with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO processed (key, seq) VALUES (?, "
                "(SELECT COALESCE(MAX(seq), 0) + 1 FROM processed))",
                (key,),
            )
            self._marks += 1
            if self._marks % 10_000 == 0:  # prune the oldest now and then, not on every write
                self._db.execute(
                    "DELETE FROM processed WHERE seq <= (SELECT MAX(seq) FROM processed) - ?",
                    (self._capacity,),
                )

    async def close(self) -> None:
        self._db.close()


def open_store(path: Path | None, capacity: int) -> IdempotencyStore:
    """SQLite store when a path is configured, else in-memory."""
    if path is None:
        return MemoryIdempotencyStore(capacity)
    return SqliteIdempotencyStore(path, capacity)
