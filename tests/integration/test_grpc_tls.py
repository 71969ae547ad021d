"""The gRPC TLS option: with a certificate and key, a service's port speaks TLS only."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.grpc_server import start_grpc_server
from tests.support.tls import self_signed

pytestmark = pytest.mark.integration


async def health_status(channel: grpc.aio.Channel) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(response.status)


async def test_tls_port_serves_tls_clients_and_refuses_plaintext(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    endpoint = await start_grpc_server("127.0.0.1", 0, tls=(cert_file, key_file))
    target = f"127.0.0.1:{endpoint.port}"
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert_file.read_bytes())
        async with grpc.aio.secure_channel(target, credentials) as channel:
            assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_status(channel)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await endpoint.stop(0)
