"""gRPC aio server bootstrap: standard health checking, reflection, trace-context interceptor."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

# A registration: (add_XServicer_to_server function, servicer instance, full service name).
Registration = tuple[Callable[[Any, grpc.aio.Server], None], Any, str]

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass
class GrpcEndpoint:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    service_names: list[str] = field(default_factory=list)

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        await self.set_serving(False)
        await self.server.stop(grace_s)


async def start_grpc_server(
    host: str,
    port: int,
    registrations: Iterable[Registration] = (),
    *,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
    tls: tuple[Path, Path] | None = None,
) -> GrpcEndpoint:
    """Start a server with the given servicers plus grpc.health.v1 and reflection; all report SERVING.

    `tls` = (certificate chain, private key), PEM files: the port then accepts TLS connections only."""
    server = grpc.aio.server(
        interceptors=[aio_server_interceptor(), *interceptors],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    names: list[str] = []
    for add_to_server, servicer, full_name in registrations:
        add_to_server(servicer, server)
        names.append(full_name)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    if tls is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        cert_file, key_file = tls
        credentials = grpc.ssl_server_credentials([(key_file.read_bytes(), cert_file.read_bytes())])
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    await server.start()
    endpoint = GrpcEndpoint(server=server, health=health_servicer, port=bound, service_names=names)
    await endpoint.set_serving(True)
    return endpoint
