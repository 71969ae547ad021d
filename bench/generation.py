"""Streaming through the generator vs a direct tritonclient stream to the same Triton model.

Both variants stream answers from `tiny_llm` with a decode time of `token_delay_ms` per token (set
through sampling_parameters), so overhead is measured at the cadence of a small CPU LLM (Gemma 3
270M decodes ~25-35 ms/token on these cores).
Variant A: a ContextRetrieved event goes onto Kafka; the generator (its own process) builds the
prompt, streams from Triton and publishes one GenerationChunk per piece to a reply topic, where the
bench times each arrival. Variant B: the bench streams the same prompt from Triton itself with
tritonclient's asyncio gRPC API. Per-token time = (last piece - first piece) / (pieces - 1);
time to first token from publish (A) or request (B).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as triton_aio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from llmops.query.v1.events_pb2 import ContextRetrieved, QueryRequested
from llmops.query.v1.query_pb2 import RetrievedChunk
from tritonclient.grpc import InferInput

from bench.report import Row, status
from services.cli.stack import service_process
from services.generator.prompts import TemplateRegistry, approx_token_count, pack_context
from shared.events import event_headers, new_meta
from shared.infra.stack import Stack
from shared.topics import CONTEXT_RETRIEVED

PORT_BASE = 36000
TOKEN_DELAY_MS = 25
PASSAGE = " ".join(f"word{i}" for i in range(40)) + "."  # tiny_llm copies this sentence: 41 pieces


def _event(reply_topic: str) -> ContextRetrieved:
    request = QueryRequested(
        meta=new_meta(tenant_id="bench", producer="bench"),
        question="what?",
        reply_topic=reply_topic,
        stream=True,
        max_tokens=64,
    )
    return ContextRetrieved(
        meta=new_meta(tenant_id="bench", producer="bench", correlation_id=request.meta.correlation_id),
        request=request,
        chunks=[RetrievedChunk(chunk_id="c#0", document_id="c", text=PASSAGE, score=1.0)],
    )


def _per_token_ms(times: list[float]) -> float:
    return (times[-1] - times[0]) / (len(times) - 1) * 1000


async def _via_generator(bootstrap: str, requests: int) -> tuple[list[float], list[float], int]:
    reply_topic = f"bench.generation.replies.{int(time.time())}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(reply_topic, num_partitions=1, replication_factor=1)])
    await admin.close()
    consumer = AIOKafkaConsumer(reply_topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    per_token, ttft, pieces = [], [], 0
    try:
        for _ in range(requests):  # one at a time: latency, not throughput
            event = _event(reply_topic)
            key = event.meta.correlation_id.encode()
            arrivals: list[float] = []
            sent = time.perf_counter()
            await producer.send_and_wait(
                CONTEXT_RETRIEVED.name,
                event.SerializeToString(),
                key=key,
                headers=[(k, v.encode()) for k, v in event_headers(event).items()],
            )
            done = False
            while not done:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for record in records:
                        if record.key != key:
                            continue
                        kind = dict(record.headers)["event-type"].decode()
                        if kind.endswith("GenerationChunk"):
                            arrivals.append(time.perf_counter())
                        else:
                            done = True
            per_token.append(_per_token_ms(arrivals))
            ttft.append((arrivals[0] - sent) * 1000)
            pieces = len(arrivals)
    finally:
        await producer.stop()
        await consumer.stop()
    return per_token, ttft, pieces


async def _direct(triton_url: str, prompt: str, requests: int) -> tuple[list[float], list[float], int]:
    client = triton_aio.InferenceServerClient(triton_url)
    sampling = json.dumps({"max_tokens": 64, "token_delay_ms": TOKEN_DELAY_MS}).encode()
    per_token, ttft, pieces = [], [], 0
    try:
        for _ in range(requests):
            text = InferInput("text_input", [1], "BYTES")
            text.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
            params = InferInput("sampling_parameters", [1], "BYTES")
            params.set_data_from_numpy(np.array([sampling], dtype=np.object_))

            async def one(inputs: list[InferInput] = [text, params]) -> Any:  # noqa: B006
                yield {
                    "model_name": "tiny_llm",
                    "inputs": inputs,
                    "parameters": {"triton_enable_empty_final_response": True},
                }

            arrivals: list[float] = []
            sent = time.perf_counter()
            async for result, error in client.stream_infer(one()):
                if error is not None:
                    raise RuntimeError(error)
                final = result.get_response().parameters.get("triton_final_response")
                output = result.as_numpy("text_output")
                if output is not None and output.size:
                    arrivals.append(time.perf_counter())
                if final is not None and final.bool_param:
                    break
            per_token.append(_per_token_ms(arrivals))
            ttft.append((arrivals[0] - sent) * 1000)
            pieces = len(arrivals)
    finally:
        await client.close()
    return per_token, ttft, pieces


def run_generation(requests: int = 20) -> tuple[list[Row], dict[str, Any]]:
    template = TemplateRegistry().get("grounded_qa")
    context, _ = pack_context(_event("x").chunks, budget_tokens=1500, count_tokens=approx_token_count)
    prompt = template.render(context, "what?")
    with tempfile.TemporaryDirectory(prefix="llmops-bench-gen-") as state_dir:
        stack = Stack(
            Path(state_dir), port_base=PORT_BASE, components=("kafka", "triton"), triton_models=["tiny_llm"]
        )
        generator = service_process(
            stack,
            "generator",
            grpc_port=PORT_BASE + 54,
            env={
                "LLMOPS_TENANTS_KNOWN": "bench",
                "LLMOPS_GENERATOR_LOG_LEVEL": "WARNING",
                "LLMOPS_GENERATOR_SAMPLING_PARAMETERS": json.dumps({"token_delay_ms": TOKEN_DELAY_MS}),
            },
            start_timeout_s=120,
        )
        try:
            status("generation: starting Kafka, Triton and the generator")
            stack.up()
            generator.start()
            results: dict[str, list[tuple[list[float], list[float], int]]] = {"generator": [], "direct": []}
            for rep in range(2):  # alternate A, B, A, B
                results["generator"].append(
                    asyncio.run(_via_generator(stack.kafka.bootstrap_servers, requests))
                )
                results["direct"].append(asyncio.run(_direct(stack.triton.grpc_url, prompt, requests)))
                status(f"generation: round {rep + 1}/2 done")
        finally:
            generator.stop()
            stack.down()

    def med(name: str, index: int) -> float:
        return statistics.median(v for run in results[name] for v in run[index])  # type: ignore[union-attr]

    a_tok, b_tok = med("generator", 0), med("direct", 0)
    a_ttft, b_ttft = med("generator", 1), med("direct", 1)
    pieces = results["direct"][0][2]
    notes = (
        f"tiny_llm at {TOKEN_DELAY_MS} ms/token, {pieces} pieces per answer, {requests} sequential requests "
        "x 2 rounds per variant, medians; A = Kafka in -> generator process -> Triton -> GenerationChunk "
        "on Kafka"
    )
    rows = [
        Row(
            "generation per-token time (ms)",
            f"generator {a_tok:.2f}",
            f"direct tritonclient {b_tok:.2f}",
            f"{a_tok / b_tok:.3f}",
            notes,
        ),
        Row(
            "generation time to first token (ms)",
            f"generator {a_ttft:.1f}",
            f"direct tritonclient {b_ttft:.1f}",
            f"{a_ttft / b_ttft:.2f}",
            "A includes the Kafka hops in and out and prompt building",
        ),
    ]
    raw = {
        "per_token_ms": {"generator": a_tok, "direct": b_tok},
        "ttft_ms": {"generator": a_ttft, "direct": b_ttft},
    }
    return rows, raw
