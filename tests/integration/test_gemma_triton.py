"""Gemma 3 270M (deploy/triton/models/gemma3_270m) on the real Triton: grounded, streamed, stoppable.

The session's Triton serves the fast stand-ins only; this module prepares the GGUF and loads
gemma3_270m into it through the model control API, and unloads it afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_aio
from llmops.query.v1.query_pb2 import RetrievedChunk
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

from services.generator.llm import TritonLLM
from services.generator.prompts import TemplateRegistry, citations_for, cited_markers, pack_context
from services.generator.routing import ModelTarget
from shared.errors import PermanentError
from shared.infra.models import GEMMA_MODEL, prepare_gemma
from shared.infra.process import InfraError
from shared.infra.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSAGE = (
    "The Tallinn ferry terminal opens at 6 a.m. and closes at 11 p.m. every day. "
    "Tickets are sold at the terminal and online."
)
DISTRACTOR = "Sourdough bread rises slowly because wild yeast ferments the dough overnight."
QUESTION = "When does the Tallinn ferry terminal open?"
GEMMA = ModelTarget(GEMMA_MODEL)


@pytest.fixture(scope="module")
def gemma(triton: str, test_stack: Stack) -> Iterator[str]:
    """The session's Triton with gemma3_270m loaded; a failure to prepare or load fails the tests."""
    try:
        prepare_gemma()
    except InfraError as exc:
        pytest.fail(f"the Gemma GGUF could not be prepared: {exc}", pytrace=False)
    client = triton_grpc.InferenceServerClient(triton)
    try:
        client.load_model(GEMMA_MODEL)
    except InferenceServerException as exc:
        log = test_stack.triton.process().log_tail()
        pytest.fail(f"Triton could not load {GEMMA_MODEL}: {exc}\nTriton log:\n{log}", pytrace=False)
    asyncio.run(raw_stream(triton, "Warm-up:", {"max_tokens": 1}))  # first evaluation allocates buffers
    yield triton
    client.unload_model(GEMMA_MODEL)
    client.close()


def words(text: str) -> set[str]:
    return {w.strip(".,;:!?\"'()").lower() for w in text.split()} - {""}


CHUNKS = [
    RetrievedChunk(chunk_id="c1", document_id="ferry", text=PASSAGE),
    RetrievedChunk(chunk_id="c2", document_id="bread", text=DISTRACTOR),
]


def grounded_prompt() -> tuple[str, tuple[str, ...], int]:
    """The real grounded_qa template with the retrieved passages, as the generator renders it."""
    template = TemplateRegistry().get("grounded_qa", "v1")
    context, _ = pack_context(CHUNKS, budget_tokens=1500)
    return template.render(context, QUESTION), template.stop, template.max_tokens


async def raw_stream(url: str, prompt: str, sampling: dict[str, Any]) -> list[str]:
    """Every text_output piece Triton sends until its final flag (no client-side stop handling)."""

    def tensor(name: str, value: Any, datatype: str, dtype: Any) -> InferInput:
        item = InferInput(name, [1], datatype)
        item.set_data_from_numpy(np.array([value], dtype=dtype))
        return item

    inputs = [
        tensor("text_input", prompt.encode(), "BYTES", np.object_),
        tensor("stream", True, "BOOL", np.bool_),
        tensor("sampling_parameters", json.dumps(sampling).encode(), "BYTES", np.object_),
    ]

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {
            "model_name": GEMMA_MODEL,
            "inputs": inputs,
            "parameters": {"triton_enable_empty_final_response": True},
        }

    pieces: list[str] = []
    async with triton_aio.InferenceServerClient(url) as client:
        async for result, error in client.stream_infer(requests(), stream_timeout=30):
            if error is not None:
                raise error
            output = result.as_numpy("text_output")
            if output is not None and output.size:
                pieces.append(b"".join(output.reshape(-1)).decode())
            if result.get_response().parameters["triton_final_response"].bool_param:
                return pieces
    raise AssertionError("the stream ended without Triton's final response")


async def test_grounded_answer_streams_incrementally(gemma: str) -> None:
    prompt, stop, max_tokens = grounded_prompt()
    llm = TritonLLM(gemma)
    pieces: list[str] = []
    arrivals: list[float] = []
    started = time.perf_counter()
    try:
        async for piece in llm.stream(GEMMA, prompt, max_tokens=max_tokens, stop=stop, timeout_s=30):
            arrivals.append(time.perf_counter() - started)
            pieces.append(piece)
    finally:
        await llm.close()
    answer = "".join(pieces)
    assert len(pieces) >= 4, pieces
    # Incremental: the first piece comes well before the last, one decode step after another (the
    # prompt's processing time before the first piece varies with the load on the machine).
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert sum(gap > 0.005 for gap in gaps) >= len(gaps) // 2, arrivals  # decode steps, not one burst
    assert sum(t < arrivals[-1] - 0.05 for t in arrivals) >= len(arrivals) // 2, arrivals
    # Grounded: the answer states the passage's fact, in words taken from the passage.
    assert "6 a.m" in answer, answer
    assert words(answer) <= words(PASSAGE + " " + QUESTION + " [1]"), answer
    # The BASE 270M model rarely writes the [n] markers the template asks for (greedy decoding of
    # this prompt writes none); when it does, it may only cite the ferry passage. Either way the
    # generator's citations name the ferry passage and not the distractor.
    assert set(cited_markers(answer)) <= {1}, answer
    _, citations = pack_context(CHUNKS, budget_tokens=1500)
    cited = citations_for(answer, citations, {c.chunk_id: c.text for c in CHUNKS})
    assert [c.document_id for c in cited] == ["ferry"], answer


async def test_stop_sequences_end_generation_on_the_server(gemma: str) -> None:
    prompt, _, _ = grounded_prompt()
    greedy = {"max_tokens": 24, "temperature": 0.0}
    full = "".join(await raw_stream(gemma, prompt, greedy))
    words = full.split()
    assert len(words) >= 4, full
    stop = words[2]  # a sequence the unconstrained answer reaches after a few tokens
    stopped = await raw_stream(gemma, prompt, {**greedy, "stop": [stop]})
    text = "".join(stopped)
    assert text == full[: full.index(stop)], (full, text)
    assert stop not in text


async def test_max_tokens_and_seeded_sampling(gemma: str) -> None:
    prompt, _, _ = grounded_prompt()
    assert len(await raw_stream(gemma, prompt, {"max_tokens": 3})) <= 3
    sampled = {"max_tokens": 16, "temperature": 1.0, "top_p": 0.95, "seed": 1234}
    first = "".join(await raw_stream(gemma, prompt, sampled))
    again = "".join(await raw_stream(gemma, prompt, sampled))
    assert first and first == again  # the same seed gives the same sample


async def test_a_prompt_over_the_context_window_is_refused(gemma: str) -> None:
    llm = TritonLLM(gemma)
    try:
        with pytest.raises(PermanentError, match="context window"):
            async for _ in llm.stream(GEMMA, "word " * 6000, max_tokens=16, timeout_s=30):
                pass
    finally:
        await llm.close()
