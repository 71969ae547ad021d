"""The local platform: infrastructure plus every service as its own background process."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.gateway.auth import issue_key
from shared.infra.models import GEMMA_MODEL
from shared.infra.process import ManagedProcess
from shared.infra.stack import Stack

# Service name -> (gRPC port, metrics port); the same numbers as docker-compose.yml.
SERVICE_PORTS: dict[str, tuple[int, int]] = {
    "gateway": (50051, 9101),
    "embedder": (50052, 9102),
    "retriever": (50053, 9103),
    "generator": (50054, 9104),
    "monitor": (50055, 9105),
    "finetune": (50056, 9106),
}


def grpc_serving(target: str, timeout_s: float = 1.0) -> bool:
    """True when the standard health service at `target` reports SERVING."""
    try:
        with grpc.insecure_channel(target) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s
            )
    except grpc.RpcError:
        return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def service_process(
    stack: Stack,
    name: str,
    *,
    grpc_port: int,
    metrics_port: int = 0,
    env: dict[str, str] | None = None,
    start_timeout_s: float = 60,
) -> ManagedProcess:
    """`python -m services.<name>` wired to `stack`, healthy once its gRPC health reports SERVING."""
    prefix = f"LLMOPS_{name.upper()}_"
    return ManagedProcess(
        name=name,
        command=[sys.executable, "-m", f"services.{name}"],
        state_dir=stack.state_dir,
        health=lambda: grpc_serving(f"127.0.0.1:{grpc_port}"),
        env={
            **stack.endpoints(),
            f"{prefix}GRPC_PORT": str(grpc_port),
            f"{prefix}METRICS_PORT": str(metrics_port),
            **(env or {}),
        },
        start_timeout_s=start_timeout_s,
    )


@dataclass
class Platform:
    stack: Stack
    # The model the generator answers with; Triton serves it beside the stack's models (tiny_llm,
    # minilm_embed). Gemma 3 270M's GGUF is assembled into the cache on the first `llmops up`.
    llm: str = GEMMA_MODEL

    def __post_init__(self) -> None:
        if self.llm not in self.stack.triton_models:
            self.stack.triton_models = [*self.stack.triton_models, self.llm]

    def routing_policy(self) -> str:
        """The generator's LLMOPS_GENERATOR_ROUTING_POLICY: every tenant on `llm`, Triton's latest version."""
        return json.dumps({"default": {"model": self.llm, "version": ""}, "pinned": {}, "canary": []})

    @property
    def state_dir(self) -> Path:
        return self.stack.state_dir

    def service(self, name: str) -> ManagedProcess:
        grpc_port, metrics_port = SERVICE_PORTS[name]
        env = {
            "LLMOPS_GATEWAY_API_KEYS_FILE": str(self.api_keys_file),
            f"LLMOPS_{name.upper()}_IDEMPOTENCY_DB": str(self.state_dir / name / "processed.db"),
            "LLMOPS_MONITOR_CLICKHOUSE_PATH": str(self.state_dir / "monitor" / "chdb"),
        }
        if name == "generator":  # a policy or sampling set in the environment wins
            env["LLMOPS_GENERATOR_ROUTING_POLICY"] = (
                os.environ.get("LLMOPS_GENERATOR_ROUTING_POLICY") or self.routing_policy()
            )
            # Greedy decoding of the 270M base model loops on its own sentence; a repetition penalty
            # of 1.3 stops that (measured on the sample corpus: no loops, same facts when it knows them).
            env["LLMOPS_GENERATOR_SAMPLING_PARAMETERS"] = os.environ.get(
                "LLMOPS_GENERATOR_SAMPLING_PARAMETERS", '{"repetition_penalty": 1.3}'
            )
        return service_process(self.stack, name, grpc_port=grpc_port, metrics_port=metrics_port, env=env)

    @property
    def api_keys_file(self) -> Path:
        return self.state_dir / "api-keys.json"

    @property
    def demo_key_file(self) -> Path:
        return self.state_dir / "demo.key"

    def ensure_demo_key(self) -> str:
        """An API key for the 'demo' tenant, created once; its hash goes to the gateway's key file."""
        if not self.demo_key_file.exists():
            key = issue_key(self.api_keys_file, "demo")
            self.demo_key_file.write_text(key + "\n")
            self.demo_key_file.chmod(0o600)
        return self.demo_key_file.read_text().strip()

    def up(self) -> None:
        self.ensure_demo_key()
        self.stack.up()
        procs = [self.service(name) for name in SERVICE_PORTS]
        for proc in procs:
            proc.start(wait=False)
        for proc in procs:
            proc.wait_healthy()

    def down(self) -> None:
        for name in reversed(SERVICE_PORTS):
            self.service(name).stop(timeout_s=30)
        self.stack.down()

    def status(self) -> dict[str, str]:
        result = self.stack.status()
        for name, (grpc_port, _) in SERVICE_PORTS.items():
            result[name] = "serving" if grpc_serving(f"127.0.0.1:{grpc_port}") else "down"
        return result

    def endpoints(self) -> list[tuple[str, str]]:
        rows = [(k, v) for k, v in self.stack.endpoints().items()]
        for name, (grpc_port, metrics_port) in SERVICE_PORTS.items():
            rows.append((f"{name} gRPC", f"127.0.0.1:{grpc_port}"))
            rows.append((f"{name} metrics", f"http://127.0.0.1:{metrics_port}/metrics"))
        return rows
