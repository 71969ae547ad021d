"""A real single-node Kafka whose client listener is SASL_SSL (SCRAM-SHA-512 over TLS with a
self-signed certificate), for the security tests. Each module that uses it starts its own on the same
ports (module scope: one at a time), beside the session's PLAINTEXT Kafka."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.infra.kafka import KafkaCluster, ListenerSecurity
from shared.infra.process import InfraError
from tests.support.tls import self_signed

# Offsets from the session's port base that no other test uses (+0..+93 stack, +592..+793 three-node
# stack of test_infra, +892..+1093 fault-test Kafka, +1000..+1080 fault-test stack): +1392..+1394.
SECURED_KAFKA_PORT = int(os.environ.get("LLMOPS_TEST_PORT_BASE", "29000")) + 1392  # controller +1393
TLS_ONLY_PORT = SECURED_KAFKA_PORT + 2  # the node's extra SSL listener (no SASL)

SERVICE_USER = "llmops"  # the platform's services (and the broker itself)
CLIENT_USER = "alice"  # a second SCRAM user for the tests' own clients


def start_secured_kafka(state_dir: Path) -> KafkaCluster:
    """Format and start the node (SCRAM users with fresh random passwords) with the catalog's topics;
    fail the test, with the reason, if it cannot start."""
    cert_file, key_file = self_signed(state_dir / "tls", name="kafka")
    security = ListenerSecurity(
        cert_file=cert_file,
        key_file=key_file,
        users={SERVICE_USER: secrets.token_urlsafe(18), CLIENT_USER: secrets.token_urlsafe(18)},
        broker_user=SERVICE_USER,
        tls_only_listener=True,  # +2: for the SSL (TLS without SASL) client test
    )
    cluster = KafkaCluster(state_dir, base_port=SECURED_KAFKA_PORT, security=security)
    try:
        cluster.start()
    except InfraError as exc:
        cluster.stop()
        pytest.fail(f"the SASL_SSL Kafka could not start: {exc}", pytrace=False)
    return cluster


@pytest.fixture(scope="module")
def secured_kafka() -> Iterator[KafkaCluster]:
    state_dir = Path(tempfile.mkdtemp(prefix="llmops-test-kafka-sasl-ssl-"))
    cluster = start_secured_kafka(state_dir)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
