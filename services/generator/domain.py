"""Pure logic of the generator: the events it publishes."""

from __future__ import annotations

from collections.abc import Sequence

from llmops.query.v1.events_pb2 import ContextRetrieved, GenerationChunk, QueryAnswered
from llmops.query.v1.query_pb2 import Citation, RetrievedChunk, SentenceSupport, StageTiming, TokenUsage

from services.generator.prompts import PromptTemplate
from services.generator.routing import ModelTarget
from shared.events import follow_meta
from shared.text import sentence_support


def generation_chunk(event: ContextRetrieved, sequence: int, text: str, *, producer: str) -> GenerationChunk:
    return GenerationChunk(meta=follow_meta(event.meta, producer=producer), sequence=sequence, text=text)


def query_answered(
    event: ContextRetrieved,
    *,
    answer: str,
    citations: Sequence[Citation],
    template: PromptTemplate,
    target: ModelTarget,
    prompt_tokens: int,
    completion_tokens: int,
    timings_ms: dict[str, float],
    producer: str,
) -> QueryAnswered:
    return QueryAnswered(
        meta=follow_meta(event.meta, producer=producer),
        question=event.request.question,
        answer=answer,
        citations=citations,
        context=event.chunks,
        usage=TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
        model_name=target.model,
        model_version=target.version,
        prompt_template_id=template.id,
        prompt_template_version=template.version,
        timings=[*event.timings, *(StageTiming(stage=k, duration_ms=v) for k, v in timings_ms.items())],
        # judged here, where the answer and its context are at hand: the monitor need not tokenise them
        sentence_support=answer_support(answer, event.chunks),
    )


def answer_support(answer: str, context: Sequence[RetrievedChunk]) -> list[SentenceSupport]:
    """QueryAnswered.sentence_support: each answer sentence's support in the retrieved chunks."""
    return [
        SentenceSupport(content_words=words, words_in_context=in_context)
        for words, in_context in sentence_support(answer, tuple(chunk.text for chunk in context))
    ]
