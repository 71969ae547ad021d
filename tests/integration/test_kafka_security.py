"""Kafka SASL/TLS client settings against a real broker whose only client listener is SASL_SSL
(SCRAM-SHA-512 over TLS, self-signed certificate; tests/support/secured_kafka.py).

- The shared bus (`shared.bus.create_broker`, what every service uses) publishes and consumes over
  SASL_SSL, with the password from a file and from the environment.
- A wrong password is refused by the broker (an authentication error, in bounded time).
- A client that does not trust the broker's certificate is refused (certificate verification).
- A PLAINTEXT client, and a SASL_PLAINTEXT one with the right password, cannot use the port.
- security_protocol SSL (TLS without SASL) really speaks verified TLS, against the node's extra
  TLS-only listener.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaClient
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, SaslAuthenticationFailed
from llmops.query.v1.events_pb2 import QueryRequested
from prometheus_client import CollectorRegistry

from shared.bus import create_broker, kafka_client_security, protobuf_decoder, publish_event
from shared.infra.kafka import KafkaCluster
from shared.settings import KafkaSettings
from tests.support.kafka_tools import query_event, unique_topic
from tests.support.secured_kafka import CLIENT_USER, TLS_ONLY_PORT, secured_kafka
from tests.support.tls import self_signed

pytestmark = pytest.mark.integration

__all__ = ["secured_kafka"]  # the module-scoped fixture, imported for pytest

REFUSAL_TIMEOUT_S = 30.0  # a refused client must fail well within this, never hang


def alice_settings(cluster: KafkaCluster, **changes: Any) -> KafkaSettings:
    """Settings for the tests' SCRAM user, with `changes` applied (a wrong password, no CA, ...)."""
    return KafkaSettings(**{**cluster.client_settings(CLIENT_USER).model_dump(), **changes})


async def create_topic(settings: KafkaSettings, name: str) -> None:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, **kafka_client_security(settings)
    )
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def round_trip(settings: KafkaSettings) -> QueryRequested:
    """Publish one event with a bus broker built from `settings` and consume it back with the same
    broker's subscriber; returns what the subscriber received."""
    topic = unique_topic("sasl-ssl")
    await create_topic(settings, topic)
    broker = create_broker(settings, guard=None, service="test-sasl-ssl", registry=CollectorRegistry())
    received: asyncio.Future[QueryRequested] = asyncio.get_running_loop().create_future()

    @broker.subscriber(
        topic,
        group_id=f"{topic}.group",
        auto_offset_reset="earliest",
        decoder=protobuf_decoder(QueryRequested),
    )
    async def on_event(event: QueryRequested) -> None:
        if not received.done():
            received.set_result(event)

    await asyncio.wait_for(broker.start(), 60)
    try:
        sent = query_event("does TLS reach the broker?")
        await publish_event(broker, topic, sent, key=sent.meta.correlation_id)
        got = await asyncio.wait_for(received, 30)
        assert got.meta.event_id == sent.meta.event_id
        return got
    finally:
        await broker.stop()


async def refused_broker_start(settings: KafkaSettings) -> None:
    """A bus broker with `settings` fails to start, in bounded time."""
    broker = create_broker(settings, guard=None, service="test-refused", registry=CollectorRegistry())
    try:
        with pytest.raises(KafkaConnectionError):
            await asyncio.wait_for(broker.start(), REFUSAL_TIMEOUT_S)
    finally:
        await broker.stop()


async def connect_once(settings: KafkaSettings) -> None:
    """One connection to the broker with `settings`, including the TLS and SASL handshakes: raises the
    error the broker's answer (or the TLS layer) gives, which a bootstrapping client only logs."""
    host, port = settings.bootstrap_servers.split(",")[0].rsplit(":", 1)
    conn = await asyncio.wait_for(
        create_conn(host, int(port), request_timeout_ms=10_000, **kafka_client_security(settings)),
        REFUSAL_TIMEOUT_S,
    )
    conn.close()


async def timed(step: Callable[[], Awaitable[None]]) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await step()
    return loop.time() - started


async def test_bus_round_trip_over_sasl_ssl_with_password_file(
    secured_kafka: KafkaCluster, tmp_path: Path
) -> None:
    password_file = tmp_path / "kafka-password"
    assert secured_kafka.security is not None
    password_file.write_text(secured_kafka.security.users[CLIENT_USER] + "\n")  # a Secret's trailing newline
    settings = alice_settings(secured_kafka, sasl_password=None, sasl_password_file=password_file)
    assert settings.security_protocol == "SASL_SSL" and settings.sasl_mechanism == "SCRAM-SHA-512"
    await connect_once(settings)  # the handshakes pass: TLS verified against the CA, SCRAM accepted
    event = await round_trip(settings)
    assert event.question == "does TLS reach the broker?"


async def test_bus_round_trip_over_sasl_ssl_with_password_from_environment(
    secured_kafka: KafkaCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert secured_kafka.security is not None
    env = {
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": secured_kafka.bootstrap_servers,
        "LLMOPS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "LLMOPS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "LLMOPS_KAFKA_SASL_USERNAME": CLIENT_USER,
        "LLMOPS_KAFKA_SASL_PASSWORD": secured_kafka.security.users[CLIENT_USER],
        "LLMOPS_KAFKA_SSL_CAFILE": str(secured_kafka.security.cert_file),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = KafkaSettings()
    assert settings.sasl_password is not None
    assert secured_kafka.security.users[CLIENT_USER] not in repr(settings)
    await round_trip(settings)


async def test_wrong_password_is_refused_with_an_authentication_error(secured_kafka: KafkaCluster) -> None:
    settings = alice_settings(secured_kafka, sasl_password="not-the-password")
    with pytest.raises(SaslAuthenticationFailed, match=r"(?i)authentication failed"):
        await connect_once(settings)
    # The bus broker a service would build gives up (its client logs the same cause) in bounded time.
    assert await timed(lambda: refused_broker_start(settings)) < REFUSAL_TIMEOUT_S
    # An unknown user fares the same.
    with pytest.raises(SaslAuthenticationFailed):
        await connect_once(alice_settings(secured_kafka, sasl_username="mallory"))


async def test_client_that_does_not_trust_the_certificate_is_refused(
    secured_kafka: KafkaCluster, tmp_path: Path
) -> None:
    # No CA file: the system's CAs, which never signed the broker's self-signed certificate.
    untrusting = alice_settings(secured_kafka, ssl_cafile=None)
    with pytest.raises(ssl.SSLCertVerificationError, match="self-signed certificate"):
        await connect_once(untrusting)
    assert await timed(lambda: refused_broker_start(untrusting)) < REFUSAL_TIMEOUT_S
    # A CA file naming some other certificate is refused too.
    other_cert, _ = self_signed(tmp_path, name="other")
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect_once(alice_settings(secured_kafka, ssl_cafile=other_cert))


async def test_clients_without_tls_cannot_use_the_sasl_ssl_port(secured_kafka: KafkaCluster) -> None:
    plaintext = KafkaSettings(bootstrap_servers=secured_kafka.bootstrap_servers)
    client = AIOKafkaClient(bootstrap_servers=plaintext.bootstrap_servers, request_timeout_ms=5000)
    try:
        with pytest.raises(KafkaConnectionError):
            await asyncio.wait_for(client.bootstrap(), REFUSAL_TIMEOUT_S)
    finally:
        await client.close()
    assert await timed(lambda: refused_broker_start(plaintext)) < REFUSAL_TIMEOUT_S
    # The right SCRAM password without TLS does not get in either.
    sasl_plaintext = alice_settings(secured_kafka, security_protocol="SASL_PLAINTEXT", ssl_cafile=None)
    with pytest.raises((KafkaError, OSError, asyncio.TimeoutError)):
        await connect_once(sasl_plaintext)
    assert await timed(lambda: refused_broker_start(sasl_plaintext)) < REFUSAL_TIMEOUT_S


async def test_ssl_protocol_speaks_verified_tls(secured_kafka: KafkaCluster) -> None:
    assert secured_kafka.security is not None
    tls = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{TLS_ONLY_PORT}",
        security_protocol="SSL",
        ssl_cafile=secured_kafka.security.cert_file,
    )
    await round_trip(tls)
    # TLS is really in use: without the CA the handshake fails verification, and PLAINTEXT fails.
    untrusting = tls.model_copy(update={"ssl_cafile": None})
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect_once(untrusting)
    assert await timed(lambda: refused_broker_start(untrusting)) < REFUSAL_TIMEOUT_S
    plaintext = KafkaSettings(bootstrap_servers=tls.bootstrap_servers)
    assert await timed(lambda: refused_broker_start(plaintext)) < REFUSAL_TIMEOUT_S
