"""Error taxonomy every handler uses: retryable errors are redelivered, permanent ones are dead-lettered."""

from __future__ import annotations

from aiokafka.errors import KafkaError, KafkaTimeoutError


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
    """True when retrying may succeed: our RetryableError, a connection/timeout failure, or a Kafka
    client error the client marks retriable (leader moved, not enough replicas) or a send that timed
    out, as during a broker failover: the batch is redelivered, not dead-lettered."""
    if isinstance(exc, (*TRANSIENT_EXCEPTIONS, KafkaTimeoutError)):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))
