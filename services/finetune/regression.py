"""The fixed regression set: questions on the sample corpus every candidate is also judged on.

It never changes with the curated data, so "the candidate got better on the tenant's feedback" cannot
hide "and forgot what it knew". Change it only with a new `REGRESSION_SET_VERSION`.
"""

from __future__ import annotations

from services.finetune.curation import Example

REGRESSION_SET_VERSION = "r1"

_ITEMS: tuple[tuple[str, str, str], ...] = (
    (
        "What caps how many consumers of one group can work in parallel?",
        "A topic is split into partitions; the partition count caps how many consumers of one group can "
        "work in parallel, because each partition is read by exactly one consumer of the group at a time.",
        "The partition count of the topic.",
    ),
    (
        "Which events stay in order?",
        "Events with the same key land in the same partition, which keeps them in order.",
        "Events with the same key, because they land in the same partition.",
    ),
    (
        "How long is feedback kept?",
        "Retention is set per topic: query events are kept for one day, feedback for ninety days.",
        "Feedback is kept for ninety days.",
    ),
    (
        "Why does Triton run models in decoupled mode?",
        "Models run in decoupled mode, which lets Triton send one response per generated token, so the "
        "first words of an answer reach the user long before the last one is produced.",
        "So Triton can send one response per generated token.",
    ),
    (
        "Where do model versions live?",
        "Model versions live in numbered folders of the model repository.",
        "In numbered folders of the model repository.",
    ),
    (
        "Can a search in one tenant return another tenant's data?",
        "Each tenant is a separate shard, so a search in one tenant can never return another tenant's data.",
        "No, each tenant is a separate shard.",
    ),
    (
        "What does an alpha of 0 mean in hybrid search?",
        "An alpha of 0 is pure keyword search and an alpha of 1 is pure vector search.",
        "An alpha of 0 is pure keyword search.",
    ),
    (
        "Where does the monitor write one row per request?",
        "The monitor writes one wide row per request into ClickHouse.",
        "Into ClickHouse, one wide row per request.",
    ),
)


def regression_set() -> list[Example]:
    return [
        Example(
            example_id=f"regression-{REGRESSION_SET_VERSION}-{i}",
            tenant_id="",
            correlation_id=f"regression-{i}",
            question=question,
            context=(context,),
            answer=answer,
            source="accepted",
            groundedness=None,
            occurred_ms=0,
        )
        for i, (question, context, answer) in enumerate(_ITEMS)
    ]
