"""The benchmark's fine-tune dataset: question/answer pairs grounded in deploy/sample-corpus.

`python bench/gpu/finetune_data.py` (re)writes bench/gpu/data/train.jsonl and eval.jsonl, in the
format of the platform's curated datasets (`services.finetune.curation.Example.record`, one JSON object
a line, keys sorted), split as curation splits (`assign_splits`, 20% held out by a hash of the example
id). Deterministic: the same code gives the same files (a unit test checks the committed ones).

Each fact is a sentence of the corpus (checked: it must occur in the corpus text), two phrasings of a
question about it and a short answer; each phrasing is asked three ways, so 228 examples in all. The
context is the fact's sentence, then the next of the facts' sentences (in corpus order) as a second
passage; the prompt format shows the model the first passage only. Held-out
examples are other wordings of facts the training split has seen, as near-duplicates that curation's
dedup threshold lets through would be: the eval loss measures how well the adapter learned the
platform's facts and answer style, not generalisation to unseen facts.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from services.finetune.curation import Example, assign_splits, example_id  # noqa: E402
from services.finetune.model import corpus_text  # noqa: E402

DATA_DIR = HERE / "data"
TENANT = "bench"
EVAL_FRACTION = 0.2  # CurationPolicy's default

# (corpus sentence, (question, question), answer)
FACTS: tuple[tuple[str, tuple[str, str], str], ...] = (
    (
        "Users rate answers with a thumbs up or down and may send a corrected answer.",
        ("How do users rate answers?", "What can users give an answer to rate it?"),
        "With a thumbs up or down.",
    ),
    (
        "Users rate answers with a thumbs up or down and may send a corrected answer.",
        ("What may users send besides a rating?", "Besides rating an answer, what can a user submit?"),
        "A corrected answer.",
    ),
    (
        "The fine-tune scheduler curates well-rated and corrected answers into versioned datasets, "
        "removes near-duplicates and personal data, and trains a LoRA adapter when enough new examples "
        "have arrived.",
        ("Which answers does the fine-tune scheduler curate?", "What goes into the versioned datasets?"),
        "Well-rated and corrected answers.",
    ),
    (
        "The fine-tune scheduler curates well-rated and corrected answers into versioned datasets, "
        "removes near-duplicates and personal data, and trains a LoRA adapter when enough new examples "
        "have arrived.",
        (
            "What does curation remove from the datasets?",
            "What is taken out of a dataset when it is curated?",
        ),
        "Near-duplicates and personal data.",
    ),
    (
        "The fine-tune scheduler curates well-rated and corrected answers into versioned datasets, "
        "removes near-duplicates and personal data, and trains a LoRA adapter when enough new examples "
        "have arrived.",
        ("What kind of adapter does the scheduler train?", "What does the fine-tune scheduler train?"),
        "A LoRA adapter.",
    ),
    (
        "The fine-tune scheduler curates well-rated and corrected answers into versioned datasets, "
        "removes near-duplicates and personal data, and trains a LoRA adapter when enough new examples "
        "have arrived.",
        ("When does the scheduler train a new adapter?", "What triggers the training of a LoRA adapter?"),
        "When enough new examples have arrived.",
    ),
    (
        "A candidate model is promoted only when it beats the current model on the held-out evaluation "
        "set by a configured margin; a canary that regresses is rolled back automatically.",
        ("When is a candidate model promoted?", "What must a candidate do to be promoted?"),
        "It must beat the current model on the held-out evaluation set by a configured margin.",
    ),
    (
        "A candidate model is promoted only when it beats the current model on the held-out evaluation "
        "set by a configured margin; a canary that regresses is rolled back automatically.",
        ("What happens to a canary that regresses?", "What is done with a canary that gets worse?"),
        "It is rolled back automatically.",
    ),
    (
        "Every event in the platform travels over Apache Kafka.",
        ("What do the platform's events travel over?", "Which system carries every event?"),
        "Apache Kafka.",
    ),
    (
        "A topic is split into partitions; the partition count caps how many consumers of one group can "
        "work in parallel, because each partition is read by exactly one consumer of the group at a time.",
        ("What is a Kafka topic split into?", "What are the parts of a topic called?"),
        "Partitions.",
    ),
    (
        "A topic is split into partitions; the partition count caps how many consumers of one group can "
        "work in parallel, because each partition is read by exactly one consumer of the group at a time.",
        (
            "What caps how many consumers of one group can work in parallel?",
            "What limits the parallelism of a consumer group?",
        ),
        "The partition count.",
    ),
    (
        "A topic is split into partitions; the partition count caps how many consumers of one group can "
        "work in parallel, because each partition is read by exactly one consumer of the group at a time.",
        (
            "How many consumers of a group read one partition at a time?",
            "By how many consumers of the group is a partition read at once?",
        ),
        "Exactly one.",
    ),
    (
        "Events with the same key land in the same partition, which keeps them in order.",
        ("Where do events with the same key land?", "Which partition gets events that share a key?"),
        "In the same partition.",
    ),
    (
        "Events with the same key land in the same partition, which keeps them in order.",
        ("What keeps events with the same key in order?", "Why do events with one key stay in order?"),
        "They land in the same partition.",
    ),
    (
        "The platform keys query events by correlation id and ingest events by tenant and document id.",
        ("How are query events keyed?", "What is the key of a query event?"),
        "By correlation id.",
    ),
    (
        "The platform keys query events by correlation id and ingest events by tenant and document id.",
        ("How are ingest events keyed?", "What is the key of an ingest event?"),
        "By tenant and document id.",
    ),
    (
        "Retention is set per topic: query events are kept for one day, feedback for ninety days.",
        ("How long are query events kept?", "What is the retention of query events?"),
        "One day.",
    ),
    (
        "Retention is set per topic: query events are kept for one day, feedback for ninety days.",
        ("How long is feedback kept?", "What is the retention of feedback?"),
        "Ninety days.",
    ),
    (
        "Retention is set per topic: query events are kept for one day, feedback for ninety days.",
        ("At what level is retention set?", "Is retention configured per topic or globally?"),
        "Per topic.",
    ),
    (
        "The monitor writes one wide row per request into ClickHouse: the tenant, question, answer, model "
        "version, token counts, latency of every stage, retrieved chunk scores and a groundedness score.",
        ("Where does the monitor write its rows?", "Which database holds the monitor's rows?"),
        "Into ClickHouse.",
    ),
    (
        "The monitor writes one wide row per request into ClickHouse: the tenant, question, answer, model "
        "version, token counts, latency of every stage, retrieved chunk scores and a groundedness score.",
        (
            "How many rows does the monitor write per request?",
            "What does the monitor store for each request?",
        ),
        "One wide row per request.",
    ),
    (
        "The monitor writes one wide row per request into ClickHouse: the tenant, question, answer, model "
        "version, token counts, latency of every stage, retrieved chunk scores and a groundedness score.",
        ("Which latencies does the monitor record?", "What latency does the monitor's row hold?"),
        "The latency of every stage.",
    ),
    (
        "Per-minute rollups feed dashboards, and a quality alert is raised when groundedness drops or the "
        "share of queries with empty retrieval rises above its threshold.",
        ("What do the per-minute rollups feed?", "What are per-minute rollups used for?"),
        "Dashboards.",
    ),
    (
        "Per-minute rollups feed dashboards, and a quality alert is raised when groundedness drops or the "
        "share of queries with empty retrieval rises above its threshold.",
        ("When is a quality alert raised?", "What raises a quality alert?"),
        "When groundedness drops or the share of queries with empty retrieval rises above its threshold.",
    ),
    (
        "The generator sends prompts to NVIDIA Triton Inference Server.",
        ("Where does the generator send prompts?", "Which server receives the generator's prompts?"),
        "To NVIDIA Triton Inference Server.",
    ),
    (
        "Models run in decoupled mode, which lets Triton send one response per generated token, so the "
        "first words of an answer reach the user long before the last one is produced.",
        ("In which mode do the models run in Triton?", "What mode are Triton's models in?"),
        "Decoupled mode.",
    ),
    (
        "Models run in decoupled mode, which lets Triton send one response per generated token, so the "
        "first words of an answer reach the user long before the last one is produced.",
        ("What does decoupled mode let Triton do?", "How many responses does Triton send per token?"),
        "Send one response per generated token.",
    ),
    (
        "Models run in decoupled mode, which lets Triton send one response per generated token, so the "
        "first words of an answer reach the user long before the last one is produced.",
        ("Why does streaming help the user?", "What does the user gain from one response per token?"),
        "The first words of an answer reach the user long before the last one is produced.",
    ),
    (
        "Model versions live in numbered folders of the model repository.",
        ("Where do model versions live?", "How are model versions stored in the model repository?"),
        "In numbered folders of the model repository.",
    ),
    (
        "A new fine-tuned version is loaded through Triton's model-control API and receives a canary share "
        "of traffic before a full rollout.",
        ("How is a new fine-tuned version loaded?", "Which API loads a fine-tuned model version?"),
        "Through Triton's model-control API.",
    ),
    (
        "A new fine-tuned version is loaded through Triton's model-control API and receives a canary share "
        "of traffic before a full rollout.",
        (
            "What does a new version receive before a full rollout?",
            "What comes before the full rollout of a new version?",
        ),
        "A canary share of traffic.",
    ),
    (
        "The retriever keeps every customer's chunks in one Weaviate collection with native multi-tenancy.",
        (
            "Where does the retriever keep the customers' chunks?",
            "Which store holds every customer's chunks?",
        ),
        "In one Weaviate collection with native multi-tenancy.",
    ),
    (
        "Each tenant is a separate shard, so a search in one tenant can never return another tenant's data, "
        "and a tenant can be deleted or offloaded as a unit.",
        ("What is each tenant in Weaviate?", "How is a tenant stored in Weaviate?"),
        "A separate shard.",
    ),
    (
        "Each tenant is a separate shard, so a search in one tenant can never return another tenant's data, "
        "and a tenant can be deleted or offloaded as a unit.",
        (
            "Can a search in one tenant return another tenant's data?",
            "Could one tenant's search see another tenant's chunks?",
        ),
        "No, never.",
    ),
    (
        "Each tenant is a separate shard, so a search in one tenant can never return another tenant's data, "
        "and a tenant can be deleted or offloaded as a unit.",
        ("How can a tenant be deleted or offloaded?", "Is a tenant deleted piece by piece?"),
        "As a unit.",
    ),
    (
        "Search is hybrid: BM25 keyword scores and vector similarity are fused, weighted by alpha.",
        ("Which scores does hybrid search fuse?", "What is combined in the retriever's hybrid search?"),
        "BM25 keyword scores and vector similarity.",
    ),
    (
        "Search is hybrid: BM25 keyword scores and vector similarity are fused, weighted by alpha.",
        ("What weights the fusion of keyword and vector scores?", "Which parameter weights hybrid search?"),
        "Alpha.",
    ),
    (
        "An alpha of 0 is pure keyword search and an alpha of 1 is pure vector search.",
        ("What does an alpha of 0 mean?", "What search do you get with alpha set to 0?"),
        "Pure keyword search.",
    ),
)

# Three ways to ask each phrasing.
FRAMES: tuple[str, ...] = ("{q}", "Quick question about the platform: {q}", "According to the docs, {lower}")


def corpus_sentences() -> list[str]:
    """The facts' sentences, each once, in corpus order; ValueError if one is not in the corpus."""
    text = re.sub(r"\s+", " ", corpus_text())  # as the tiny base model is pre-trained on it
    sentences = list(dict.fromkeys(sentence for sentence, _, _ in FACTS))
    missing = [s for s in sentences if s not in text]
    if missing:
        raise ValueError(f"not sentences of deploy/sample-corpus: {missing}")
    return sorted(sentences, key=text.index)


def build_examples() -> list[Example]:
    sentences = corpus_sentences()
    examples: list[Example] = []
    for number, (sentence, questions, answer) in enumerate(FACTS):
        following = sentences[(sentences.index(sentence) + 1) % len(sentences)]
        for phrasing, question in enumerate(questions):
            for frame_number, frame in enumerate(FRAMES):
                asked = frame.format(q=question, lower=question[0].lower() + question[1:])
                correlation_id = f"bench-fact{number:02d}-q{phrasing}-f{frame_number}"
                examples.append(
                    Example(
                        example_id=example_id(TENANT, correlation_id),
                        tenant_id=TENANT,
                        correlation_id=correlation_id,
                        question=asked,
                        context=(sentence, following),
                        answer=answer,
                        source="accepted",
                        groundedness=None,
                        occurred_ms=0,
                    )
                )
    return examples


def jsonl(examples: list[Example]) -> str:
    """As curation writes a split: one record a line, keys sorted."""
    return "".join(json.dumps(e.record(), sort_keys=True, ensure_ascii=False) + "\n" for e in examples)


def splits() -> dict[str, str]:
    """{"train.jsonl": ..., "eval.jsonl": ...}: the files' text."""
    train, held_out = assign_splits(build_examples(), EVAL_FRACTION)
    return {"train.jsonl": jsonl(train), "eval.jsonl": jsonl(held_out)}


def main() -> int:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in splits().items():
        (DATA_DIR / name).write_text(text)
        print(f"{DATA_DIR / name}: {text.count(chr(10))} examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
