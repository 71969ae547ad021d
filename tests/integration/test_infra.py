"""The project's own scripts start real Weaviate, Triton and a three-node Kafka, healthy and usable."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from aiokafka.admin import AIOKafkaAdminClient

from shared.infra.stack import Stack
from shared.topics import CATALOG, QUERY_REQUESTED

pytestmark = pytest.mark.integration


def test_weaviate_serves_multi_tenant_collections(weaviate: str) -> None:
    with urllib.request.urlopen(f"{weaviate}/v1/meta", timeout=5) as resp:
        assert json.load(resp)["version"] == "1.35.2"
    body = json.dumps({"class": "InfraProbe", "vectorizer": "none", "multiTenancyConfig": {"enabled": True}})
    request = urllib.request.Request(
        f"{weaviate}/v1/schema",
        data=body.encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert json.load(resp)["multiTenancyConfig"]["enabled"] is True


def test_triton_serves_the_repository_model_with_the_llm_contract(triton: str) -> None:
    client = triton_grpc.InferenceServerClient(triton)
    assert client.is_model_ready("tiny_llm")
    metadata = client.get_model_metadata("tiny_llm", as_json=True)
    assert {i["name"] for i in metadata["inputs"]} >= {"text_input", "max_tokens", "stream"}
    assert [o["name"] for o in metadata["outputs"]] == ["text_output"]
    config = client.get_model_config("tiny_llm", as_json=True)["config"]
    assert config["model_transaction_policy"]["decoupled"] is True
    text = triton_grpc.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"[1] Kafka keeps an ordered log. More."], dtype=np.object_))
    pieces: list[str] = []
    client.start_stream(
        callback=lambda result, error: pieces.append(
            error.message() if error else result.as_numpy("text_output")[0].decode()
        )
    )
    client.async_stream_infer("tiny_llm", [text])
    client.stop_stream()  # waits for the stream to finish
    assert "".join(pieces) == "Kafka keeps an ordered log. [1]"
    assert len(pieces) == 6  # one response per token: decoupled streaming


@pytest.mark.slow
def test_three_node_kafka_replicates_catalog_topics() -> None:
    state = Path(tempfile.mkdtemp(prefix="llmops-kafka3-"))
    # Beside the session's stack (LLMOPS_TEST_PORT_BASE), so sessions on other bases never collide.
    port_base = int(os.environ.get("LLMOPS_TEST_PORT_BASE", "29000")) + 500
    stack = Stack(state, kafka_nodes=3, port_base=port_base, components=("kafka",))
    try:
        stack.kafka.start()  # starts its own event loop, so this test is synchronous
        asyncio.run(check_replication(stack.kafka.bootstrap_servers))
    finally:
        stack.kafka.stop()
        shutil.rmtree(state, ignore_errors=True)


async def describe_when_known(admin: AIOKafkaAdminClient, names: list[str]) -> list[Any]:
    """describe_topics of `names` once every one comes back without error and with its partitions, or
    the last answer after 30 s: a broker other than the one that answered start()'s check may still be
    catching up on metadata (seen in CI: every topic described with an error right after start)."""
    for _ in range(60):
        described = await admin.describe_topics(names)
        if all(d["error_code"] == 0 and d["partitions"] for d in described):
            break
        await asyncio.sleep(0.5)
    return list(described)


async def check_replication(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [requested] = await describe_when_known(admin, [QUERY_REQUESTED.name])
        partitions = requested["partitions"]
        assert len(partitions) == QUERY_REQUESTED.partitions
        assert all(len(p["replicas"]) == 3 for p in partitions)
        # Every catalog topic exists with three replicas (list_topics' metadata can lag, describe cannot).
        described_all = await describe_when_known(admin, [t.name for t in CATALOG])
        assert {d["topic"] for d in described_all if d["error_code"] == 0} == {t.name for t in CATALOG}
        assert all(len(p["replicas"]) == 3 for d in described_all for p in d["partitions"])
        cluster = await admin.describe_cluster()
        assert len(cluster["brokers"]) == 3
    finally:
        await admin.close()
