"""Tenacity retry policies for outbound calls: transient errors only, bounded by attempts and time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import (
    before_sleep_log,
    retry,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_before_delay,
    wait_exponential_jitter,
)

from shared.errors import is_transient

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)


def retry_transient(
    *,
    attempts: int = 5,
    max_delay_s: float = 30.0,
    initial_wait_s: float = 0.1,
    max_wait_s: float = 5.0,
    is_retryable: Callable[[BaseException], bool] = is_transient,
    until_s: float | None = None,
) -> Callable[[F], F]:
    """Decorator: retry an async call on transient errors with jittered exponential backoff.

    Permanent errors pass straight through; after the budget the last error is re-raised.
    `until_s` replaces the budget by a caller's deadline: as many attempts as start within `until_s`
    seconds of the first, and no sleep that would end past it.
    """
    stop = (
        stop_before_delay(until_s)
        if until_s is not None
        else stop_after_attempt(attempts) | stop_after_delay(max_delay_s)
    )
    return retry(  # type: ignore[return-value]
        retry=retry_if_exception(is_retryable),
        stop=stop,
        wait=wait_exponential_jitter(multiplier=initial_wait_s, max=max_wait_s),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )
