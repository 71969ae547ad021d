"""Error taxonomy every handler uses: retryable errors are redelivered, permanent ones are dead-lettered."""

from __future__ import annotations


class PermanentError(Exception):
    """Processing this event can never succeed (bad content, unknown tenant, violated invariant).

    The event goes to the dead-letter topic with the message as its reason, and the consumer moves on.
    """


class MalformedEventError(PermanentError):
    """The payload cannot be decoded as the topic's protobuf message, or lacks required metadata."""


class RetryableError(Exception):
    """A dependency failed transiently (timeout, connection refused, 503): try the event again later.

    The offset is not committed, so nothing is lost while the dependency is down.
    """


# Exception types that signal a transient condition even when raised by third-party code.
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (RetryableError, ConnectionError, TimeoutError)


def is_transient(exc: BaseException) -> bool:
    """True when retrying may succeed: our RetryableError or a connection/timeout failure."""
    return isinstance(exc, TRANSIENT_EXCEPTIONS)
