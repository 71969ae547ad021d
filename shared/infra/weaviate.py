"""Weaviate, the real server, built once with `go install` through the Go module proxy and cached."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from pathlib import Path

from shared.infra.paths import cache_dir
from shared.infra.process import ManagedProcess
from shared.infra.tools import go_install

WEAVIATE_VERSION = "v1.35.2"


def install_weaviate(version: str = WEAVIATE_VERSION) -> Path:
    """Build weaviate-server once (several minutes on 2 cores); later runs reuse the binary."""
    return go_install(
        "github.com/weaviate/weaviate/cmd/weaviate-server",
        version,
        cgo=True,
        bin_dir=cache_dir() / "weaviate" / version / "bin",
        expected="~3-10 min",
    )


@dataclass
class WeaviateServer:
    """Single node, anonymous access on loopback, HTTP and gRPC ports, no vectorizer modules."""

    state_dir: Path
    http_port: int = 18080
    grpc_port: int = 18051
    cluster_port_base: int = 18060  # gossip, data, raft and raft-rpc take this port and the next three
    version: str = WEAVIATE_VERSION

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def process(self) -> ManagedProcess:
        base = self.cluster_port_base
        return ManagedProcess(
            name="weaviate",
            command=[
                str(cache_dir() / "weaviate" / self.version / "bin" / "weaviate-server"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.http_port),
                "--scheme",
                "http",
            ],
            state_dir=self.state_dir,
            health=self.healthy,
            env={
                "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "true",
                "PERSISTENCE_DATA_PATH": str(self.state_dir / "weaviate" / "data"),
                "DEFAULT_VECTORIZER_MODULE": "none",
                "ENABLE_MODULES": "",
                "DISABLE_TELEMETRY": "true",  # no calls home
                "GO_PROFILING_DISABLE": "true",
                "GRPC_PORT": str(self.grpc_port),
                "CLUSTER_HOSTNAME": "node1",
                "CLUSTER_BIND_ADDR": "127.0.0.1",
                "CLUSTER_ADVERTISE_ADDR": "127.0.0.1",
                "CLUSTER_GOSSIP_BIND_PORT": str(base),
                "CLUSTER_DATA_BIND_PORT": str(base + 1),
                "RAFT_PORT": str(base + 2),
                "RAFT_INTERNAL_RPC_PORT": str(base + 3),
                "RAFT_BOOTSTRAP_EXPECT": "1",
                "LIMIT_RESOURCES": "true",
                "LOG_FORMAT": "text",
            },
            start_timeout_s=120,
        )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v1/.well-known/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def start(self) -> None:
        install_weaviate(self.version)
        self.process().start()

    def stop(self) -> None:
        self.process().stop(timeout_s=30)
