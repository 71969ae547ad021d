"""`llmops ask` and `llmops feedback`: the gateway's QueryStream and SubmitFeedback from a terminal."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO

import grpc
from llmops.api.v1 import feedback_service_pb2 as feedback_pb
from llmops.api.v1 import feedback_service_pb2_grpc as feedback_grpc
from llmops.api.v1 import query_service_pb2 as query_pb
from llmops.api.v1 import query_service_pb2_grpc as query_grpc
from llmops.feedback.v1.events_pb2 import Verdict
from llmops.query.v1.query_pb2 import RetrievalOptions

from shared.grpc_errors import error_info


class CallFailed(Exception):
    """A gateway call ended with a non-OK status; the message says which and why."""


def describe(error: grpc.aio.AioRpcError) -> str:
    info = error_info(error)
    reason = f" [{info.reason}]" if info is not None else ""
    return f"{error.code().name}{reason}: {error.details()}"


@dataclass
class Asked:
    answer: query_pb.QueryResponse
    pieces: list[str] = field(default_factory=list)


async def ask(
    question: str,
    *,
    target: str,
    api_key: str,
    top_k: int = 0,
    max_tokens: int = 0,
    template: str = "",
    timeout_s: float = 60.0,
    out: TextIO = sys.stdout,
) -> Asked:
    """Stream the answer to `out` as it is generated, then its sources; the final answer."""
    request = query_pb.QueryStreamRequest(
        question=question,
        retrieval=RetrievalOptions(top_k=top_k),
        max_tokens=max_tokens,
        prompt_template_id=template,
    )
    pieces: list[str] = []
    answer: query_pb.QueryResponse | None = None
    async with grpc.aio.insecure_channel(target) as channel:
        stream = query_grpc.QueryServiceStub(channel).QueryStream(
            request, metadata=(("x-api-key", api_key),), timeout=timeout_s
        )
        try:
            async for message in stream:
                if message.WhichOneof("payload") == "token":
                    out.write(message.token)
                    out.flush()
                    pieces.append(message.token)
                else:
                    answer = message.final
        except grpc.aio.AioRpcError as exc:
            raise CallFailed(describe(exc)) from exc
    if answer is None:
        raise CallFailed("the stream ended without a final answer")
    if not pieces:  # nothing streamed (e.g. chunks lost): the final answer still holds the text
        out.write(answer.answer)
    out.write("\n")
    if answer.citations:
        out.write("\nSources:\n")
        for citation in answer.citations:
            out.write(f"  [{citation.marker}] {citation.document_id}  {citation.source_uri}\n")
    timings = ", ".join(f"{t.stage} {t.duration_ms:.0f} ms" for t in answer.timings)
    out.write(f"\nmodel {answer.model_name} v{answer.model_version or '-'}; {timings}\n")
    out.write(f"request {answer.correlation_id}  (rate it: llmops feedback {answer.correlation_id} --up)\n")
    return Asked(answer=answer, pieces=pieces)


async def send_feedback(
    correlation_id: str,
    *,
    target: str,
    api_key: str,
    verdict: Verdict = Verdict.VERDICT_UNSPECIFIED,
    rating: int = 0,
    correction: str = "",
    comment: str = "",
) -> str:
    """Record feedback on an answer; the feedback event's id."""
    request = feedback_pb.SubmitFeedbackRequest(
        correlation_id=correlation_id, verdict=verdict, rating=rating, correction=correction, comment=comment
    )
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            response = await feedback_grpc.FeedbackServiceStub(channel).SubmitFeedback(
                request, metadata=(("x-api-key", api_key),), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            raise CallFailed(describe(exc)) from exc
    return str(response.event_id)
