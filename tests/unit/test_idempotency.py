from __future__ import annotations

from pathlib import Path

from shared.idempotency import MemoryIdempotencyStore, SqliteIdempotencyStore, open_store


async def test_memory_store_forgets_the_oldest_beyond_capacity() -> None:
    store = MemoryIdempotencyStore(capacity=2)
    for key in ("a", "b", "c"):
        await store.mark(key)
    assert [await store.seen(k) for k in ("a", "b", "c")] == [False, True, True]


async def test_sqlite_store_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "ids.db"
    store = open_store(path, capacity=10)
    assert isinstance(store, SqliteIdempotencyStore)
    await store.mark("event-1")
    await store.mark("event-1")  # marking twice is harmless
    await store.close()
    reopened = open_store(path, capacity=10)
    assert await reopened.seen("event-1")
    assert not await reopened.seen("event-2")
    await reopened.close()


async def test_open_store_without_path_is_in_memory() -> None:
    assert isinstance(open_store(None, capacity=5), MemoryIdempotencyStore)
