"""Secrets never reach logs or settings reprs.

The gateway runs as a real process at LOG_LEVEL DEBUG against the SASL_SSL Kafka
(tests/support/secured_kafka.py), with its SASL password from a file or from the environment, API
keys and a gRPC TLS private key. It is driven over TLS with a good key (feedback recorded on the bus,
read back from Kafka), a key of a tenant not served, an unknown key, no key, and a query that runs out
of time. Then none of the secret strings may appear in anything the process wrote to stdout or
stderr, and the settings' reprs mask the password.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from llmops.api.v1 import feedback_service_pb2 as feedback_pb
from llmops.api.v1 import feedback_service_pb2_grpc as feedback_grpc
from llmops.api.v1 import query_service_pb2 as query_pb
from llmops.api.v1 import query_service_pb2_grpc as query_grpc
from llmops.feedback.v1.events_pb2 import FeedbackRecorded, Verdict

from services.gateway.auth import issue_key
from services.gateway.settings import GatewaySettings
from shared.bus import kafka_client_security
from shared.infra.kafka import KafkaCluster
from shared.settings import KafkaSettings
from shared.topics import FEEDBACK_RECORDED
from tests.support.processes import ServiceProcess
from tests.support.secured_kafka import CLIENT_USER, SERVICE_USER, secured_kafka
from tests.support.tls import self_signed

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

__all__ = ["secured_kafka"]  # the module-scoped fixture, imported for pytest

TENANT = "demo"


def pem_body_pieces(pem: str) -> list[str]:
    """What of a PEM private key must never show: its base64 body whole, and each of its lines."""
    lines = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    return ["".join(lines), *lines]


def kafka_env(cluster: KafkaCluster, password_source: str, workdir: Path) -> dict[str, str]:
    """LLMOPS_KAFKA_* for the services' SCRAM user, the password from a file or from the environment."""
    assert cluster.security is not None
    password = cluster.security.users[SERVICE_USER]
    env = {
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "LLMOPS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "LLMOPS_KAFKA_SASL_MECHANISM": cluster.security.mechanism,
        "LLMOPS_KAFKA_SASL_USERNAME": SERVICE_USER,
        "LLMOPS_KAFKA_SSL_CAFILE": str(cluster.security.cert_file),
    }
    if password_source == "file":
        password_file = workdir / "kafka-password"
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        env["LLMOPS_KAFKA_SASL_PASSWORD_FILE"] = str(password_file)
    else:
        env["LLMOPS_KAFKA_SASL_PASSWORD"] = password
    return env


async def feedback_event_ids(settings: KafkaSettings, expected: str, timeout_s: float = 30.0) -> set[str]:
    """Event ids on the feedback topic, read over SASL_SSL until `expected` shows up (or time runs out)."""
    consumer = AIOKafkaConsumer(
        FEEDBACK_RECORDED.name,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        **kafka_client_security(settings),
    )
    await consumer.start()
    seen: set[str] = set()
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while expected not in seen and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                seen.update(FeedbackRecorded.FromString(r.value).meta.event_id for r in records)
    finally:
        await consumer.stop()
    return seen


async def status_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("password_source", ["file", "environment"])
async def test_gateway_logs_no_secret_at_debug_level(
    secured_kafka: KafkaCluster, tmp_path: Path, password_source: str
) -> None:
    assert secured_kafka.security is not None
    keys_file = tmp_path / "api-keys.json"
    good_key = issue_key(keys_file, TENANT)
    unserved_key = issue_key(keys_file, "not-served-here")
    unknown_key = f"llmops_{secrets.token_urlsafe(24)}"
    tls_cert, tls_key = self_signed(tmp_path, name="grpc")
    env = {
        **kafka_env(secured_kafka, password_source, tmp_path),
        "LLMOPS_GATEWAY_LOG_LEVEL": "DEBUG",
        "LLMOPS_GATEWAY_API_KEYS_FILE": str(keys_file),
        "LLMOPS_GATEWAY_GRPC_TLS_CERT_FILE": str(tls_cert),
        "LLMOPS_GATEWAY_GRPC_TLS_KEY_FILE": str(tls_key),
        "LLMOPS_GATEWAY_GRPC_PORT": "0",
        "LLMOPS_GATEWAY_METRICS_PORT": "0",
        "LLMOPS_GATEWAY_CONSUMER_GROUP": f"secrets-gateway-{uuid.uuid4().hex[:8]}",
        "LLMOPS_TENANTS_KNOWN": TENANT,
    }
    gateway = ServiceProcess(
        "gateway", ["-m", "services.gateway"], env, tmp_path, env_prefix="LLMOPS_GATEWAY_"
    )
    try:
        gateway.start(timeout_s=120)
        credentials = grpc.ssl_channel_credentials(root_certificates=tls_cert.read_bytes())
        async with grpc.aio.secure_channel(gateway.grpc_target, credentials) as channel:
            feedback = feedback_grpc.FeedbackServiceStub(channel)
            query = query_grpc.QueryServiceStub(channel)
            request = feedback_pb.SubmitFeedbackRequest(
                correlation_id=str(uuid.uuid4()), verdict=Verdict.VERDICT_UP, rating=5
            )
            recorded = await feedback.SubmitFeedback(request, metadata=(("x-api-key", good_key),), timeout=30)
            question = query_pb.QueryRequest(question="Where does Kafka keep offsets?")
            statuses = {
                "unknown key": await status_of(
                    query.Query(question, metadata=(("x-api-key", unknown_key),), timeout=10)
                ),
                "no key": await status_of(query.Query(question, timeout=10)),
                "tenant not served": await status_of(
                    query.Query(question, metadata=(("x-api-key", unserved_key),), timeout=10)
                ),
                # Published over SASL_SSL; nothing answers (no retriever here), so it runs out of time.
                "good key": await status_of(
                    query.Query(question, metadata=(("x-api-key", good_key),), timeout=1.5)
                ),
            }
        assert statuses == {
            "unknown key": grpc.StatusCode.UNAUTHENTICATED,
            "no key": grpc.StatusCode.UNAUTHENTICATED,
            "tenant not served": grpc.StatusCode.PERMISSION_DENIED,
            "good key": grpc.StatusCode.DEADLINE_EXCEEDED,
        }, gateway.log_tail()
        # The gateway really used the SASL_SSL bus: its event is there, read with another SCRAM user.
        reader = secured_kafka.client_settings(CLIENT_USER)
        assert recorded.event_id in await feedback_event_ids(reader, recorded.event_id)
        assert gateway.terminate() == 0, gateway.log_tail()  # graceful: every log line is flushed
    finally:
        gateway.kill()

    output = gateway.log_path.read_text(errors="replace")
    assert re.search(r'"level": "DEBUG"', output), "the gateway wrote no DEBUG record: the check is void"
    assert "service ready" in output
    secret_strings = {
        "SASL password": secured_kafka.security.users[SERVICE_USER],
        "API key": good_key,
        "API key of an unserved tenant": unserved_key,
        "unknown API key sent by a caller": unknown_key,
        **{f"gRPC TLS private key, piece {i}": p for i, p in enumerate(pem_body_pieces(tls_key.read_text()))},
    }
    leaked = [name for name, value in secret_strings.items() if value in output]
    assert not leaked, f"secrets found in the gateway's output: {leaked}"


def test_settings_reprs_mask_the_sasl_password(
    secured_kafka: KafkaCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert secured_kafka.security is not None
    password = secured_kafka.security.users[SERVICE_USER]
    for name, value in kafka_env(secured_kafka, "environment", tmp_path).items():
        monkeypatch.setenv(name, value)
    settings = GatewaySettings()
    assert settings.kafka.sasl_secret().get_secret_value() == password  # it was read...
    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(settings.kafka)):
        assert password not in text  # ...and is shown masked
    assert "**********" in settings.model_dump_json()
    # A file wins over the environment; its content never shows either.
    file_env = kafka_env(secured_kafka, "file", tmp_path)
    monkeypatch.setenv("LLMOPS_KAFKA_SASL_PASSWORD", "an-older-password")
    monkeypatch.setenv("LLMOPS_KAFKA_SASL_PASSWORD_FILE", file_env["LLMOPS_KAFKA_SASL_PASSWORD_FILE"])
    settings = GatewaySettings()
    assert settings.kafka.sasl_secret().get_secret_value() == password
    assert password not in repr(settings) and "an-older-password" not in repr(settings)
    # The test cluster's own description keeps its SCRAM passwords out of its repr.
    assert all(p not in repr(secured_kafka) for p in secured_kafka.security.users.values())
