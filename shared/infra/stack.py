"""The local stack: which components run, on which ports, in which state folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.infra.kafka import KafkaCluster
from shared.infra.triton import TritonServer
from shared.infra.weaviate import WeaviateServer

COMPONENTS = ("kafka", "weaviate", "triton")


@dataclass
class Stack:
    state_dir: Path
    kafka_nodes: int = 1
    # Ports from port_base (default 19000): triton +0..2, weaviate http +80, grpc +51, cluster +60..63,
    # kafka node n: broker +92+100n, controller +93+100n.
    port_base: int = 19000
    components: tuple[str, ...] = COMPONENTS
    triton_models: list[str] = field(default_factory=lambda: ["tiny_llm", "minilm_embed"])

    @property
    def kafka(self) -> KafkaCluster:
        return KafkaCluster(self.state_dir, nodes=self.kafka_nodes, base_port=self.port_base + 92)

    @property
    def weaviate(self) -> WeaviateServer:
        return WeaviateServer(
            self.state_dir,
            http_port=self.port_base + 80,
            grpc_port=self.port_base + 51,
            cluster_port_base=self.port_base + 60,
        )

    @property
    def triton(self) -> TritonServer:
        return TritonServer(
            self.state_dir,
            http_port=self.port_base,
            grpc_port=self.port_base + 1,
            metrics_port=self.port_base + 2,
            models=self.triton_models,
        )

    def up(self) -> None:
        for name in self.components:
            getattr(self, name).start()

    def down(self) -> None:
        for name in reversed(self.components):
            getattr(self, name).stop()

    def endpoints(self) -> dict[str, str]:
        """Connection settings for services, as environment variables."""
        env: dict[str, str] = {}
        if "kafka" in self.components:
            env["LLMOPS_KAFKA_BOOTSTRAP_SERVERS"] = self.kafka.bootstrap_servers
        if "weaviate" in self.components:
            env["LLMOPS_WEAVIATE_URL"] = self.weaviate.url
            env["LLMOPS_WEAVIATE_GRPC_PORT"] = str(self.weaviate.grpc_port)
        if "triton" in self.components:
            env["LLMOPS_TRITON_GRPC_URL"] = self.triton.grpc_url
            # The finetune publishes promoted model versions where this Triton reads them.
            env["LLMOPS_FINETUNE_MODEL_REPOSITORY"] = str(self.triton.versions_repository)
        return env

    def status(self) -> dict[str, str]:
        checks = {
            "kafka": self.kafka.running,
            "weaviate": self.weaviate.healthy,
            "triton": self.triton.healthy,
        }
        return {name: ("up" if checks[name]() else "down") for name in self.components}
