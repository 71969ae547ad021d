from __future__ import annotations

import pytest

from shared.errors import PermanentError, RetryableError, is_transient
from shared.retry import retry_transient


async def test_transient_errors_are_retried_until_success() -> None:
    calls = 0

    @retry_transient(attempts=4, initial_wait_s=0.001, max_wait_s=0.002)
    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionRefusedError("weaviate restarting")
        return "ok"

    assert await flaky() == "ok"
    assert calls == 3


async def test_permanent_errors_are_not_retried() -> None:
    calls = 0

    @retry_transient(attempts=5, initial_wait_s=0.001)
    async def bad_input() -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("empty document")

    with pytest.raises(PermanentError):
        await bad_input()
    assert calls == 1


async def test_budget_exhausted_reraises_the_last_transient_error() -> None:
    calls = 0

    @retry_transient(attempts=3, initial_wait_s=0.001, max_wait_s=0.002)
    async def down() -> None:
        nonlocal calls
        calls += 1
        raise RetryableError(f"attempt {calls}")

    with pytest.raises(RetryableError, match="attempt 3"):
        await down()
    assert calls == 3


def test_error_sorting() -> None:
    assert (
        is_transient(TimeoutError())
        and is_transient(ConnectionResetError())
        and is_transient(RetryableError())
    )
    assert not is_transient(PermanentError()) and not is_transient(ValueError())


async def test_a_caller_deadline_outlasts_the_attempt_budget() -> None:
    """`until_s` retries past `attempts` as long as the deadline allows (a request's deadline)."""
    calls = 0

    @retry_transient(attempts=2, initial_wait_s=0.001, max_wait_s=0.002, until_s=30.0)
    async def back_after_five_failures() -> str:
        nonlocal calls
        calls += 1
        if calls <= 5:
            raise ConnectionRefusedError("weaviate restarting")
        return "ok"

    assert await back_after_five_failures() == "ok"
    assert calls == 6


async def test_a_passed_deadline_stops_retrying() -> None:
    calls = 0

    @retry_transient(attempts=100, initial_wait_s=0.05, max_wait_s=0.05, until_s=0.0)
    async def down() -> None:
        nonlocal calls
        calls += 1
        raise RetryableError(f"attempt {calls}")

    with pytest.raises(RetryableError, match="attempt 1"):
        await down()
    assert calls == 1
