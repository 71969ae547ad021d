"""Embedding benchmark: sentences/s of the ONNX Runtime backend vs sentence-transformers on torch (CPU).

Both embedders get the same texts: deterministic ~60-word paragraphs of operations prose (about 80
model tokens each), handed over `batch_size` at a time as the embedder service does. Each variant is
warmed up on one batch first (and the ONNX export, when the cache lacks it, happens before any
timing); then the timed passes alternate torch, onnx, torch, onnx, ... and the median counts.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from bench.report import Row, status
from services.embedder.chunking import load_tokenizer
from services.embedder.embedding import Embedder, OnnxEmbedder, TorchEmbedder

WORDS_PER_TEXT = 60
_SUBJECTS = (
    "the embedder",
    "each consumer group",
    "the retriever",
    "a tenant's index",
    "the gateway",
    "the Kafka broker",
    "the generator",
    "every partition",
    "the monitor",
    "the fine-tuning job",
    "the vector store",
    "an ingestion worker",
    "the evaluation run",
    "the promotion gate",
)
_VERBS = (
    "reads",
    "writes",
    "rebalances",
    "retries",
    "commits",
    "batches",
    "indexes",
    "throttles",
    "replicates",
    "validates",
    "caches",
    "streams",
    "compacts",
    "scores",
)
_OBJECTS = (
    "document chunks",
    "offsets",
    "embedding vectors",
    "grounded answers",
    "dead-lettered events",
    "latency histograms",
    "retrieval filters",
    "token budgets",
    "model checkpoints",
    "schema versions",
    "tenant quotas",
    "trace spans",
    "prompt templates",
    "evaluation reports",
)
_TAILS = (
    "before the deadline expires", "when the lag grows past its threshold", "for every new revision",
    "under the configured rate limit", "after the leader election completes", "in the order they arrived",
    "without blocking the event loop", "once the health check passes", "with idempotent producers",
    "across three availability zones", "so that duplicate deliveries are harmless",
)  # fmt: skip


def make_texts(count: int, words: int = WORDS_PER_TEXT, seed: int = 20240601) -> list[str]:
    """`count` distinct paragraphs of about `words` words each; the same for the same arguments."""
    rng = random.Random(seed)
    texts = []
    for number in range(count):
        sentences: list[str] = []
        length = 0
        while length < words:
            sentence = (
                f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.randint(2, 9_999)} "
                f"{rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
            )
            sentences.append(sentence[0].upper() + sentence[1:] + ".")
            length += len(sentence.split())
        texts.append(f"Note {number}: " + " ".join(sentences))
    return texts


def raw_throughput(embedder: Embedder, texts: Sequence[str], batch_size: int) -> float:
    """Sentences per second embedding `texts` in consecutive batches of `batch_size`."""
    if not texts:
        raise ValueError("raw_throughput needs at least one text")
    started = time.perf_counter()
    for first in range(0, len(texts), batch_size):
        embedder.embed(texts[first : first + batch_size])
    return len(texts) / (time.perf_counter() - started)


def run_embedding(
    texts: int = 2000, batch_size: int = 64, repeats: int = 2
) -> tuple[list[Row], dict[str, Any]]:
    """The table row (ONNX as variant A, torch as B) and the raw numbers, like the other benchmarks."""
    import torch

    corpus = make_texts(texts)
    status("embedding: loading the torch (sentence-transformers) embedder")
    started = time.perf_counter()
    torch_embedder = TorchEmbedder(batch_size=batch_size)
    torch_load_s = time.perf_counter() - started
    status("embedding: loading the ONNX embedder (exports the model on first use)")
    started = time.perf_counter()
    onnx_embedder = OnnxEmbedder(batch_size=batch_size)
    onnx_load_s = time.perf_counter() - started
    variants: dict[str, Embedder] = {"torch": torch_embedder, "onnx": onnx_embedder}
    tokens = [len(e.ids) for e in load_tokenizer().encode_batch(corpus)]  # with [CLS] and [SEP]
    for name, embedder in variants.items():
        embedder.embed(corpus[:batch_size])  # warm-up: allocator, thread pools, kernels
        status(f"embedding: {name} warmed up")
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(repeats):
        for name, embedder in variants.items():
            rate = raw_throughput(embedder, corpus, batch_size)
            rates[name].append(rate)
            status(f"embedding: run {rep + 1}/{repeats}, {name}: {rate:,.0f} sentences/s")
    onnx_rate = statistics.median(rates["onnx"])
    torch_rate = statistics.median(rates["torch"])
    export = (
        f"ONNX export {onnx_embedder.export_seconds:.1f}s in this run"
        if onnx_embedder.export_seconds is not None
        else "ONNX model from the cache"
    )
    notes = (
        f"all-MiniLM-L6-v2 on CPU, {texts:,} paragraphs of ~{WORDS_PER_TEXT} words "
        f"(mean {statistics.mean(tokens):.0f} tokens), batch {batch_size}, median of {repeats} "
        f"alternating runs; ORT intra-op threads {os.cpu_count()}, torch threads {torch.get_num_threads()}; "
        f"{export}"
    )
    row = Row(
        "embedding (all-MiniLM-L6-v2, CPU)",
        f"ONNX Runtime {onnx_rate:,.0f} sentences/s",
        f"torch {torch_rate:,.0f} sentences/s",
        f"{onnx_rate / torch_rate:.2f}",
        notes,
    )
    raw: dict[str, Any] = {
        "texts": texts,
        "batch_size": batch_size,
        "repeats": repeats,
        "mean_tokens": round(statistics.mean(tokens), 1),
        "sentences_per_s": {name: [round(r, 1) for r in values] for name, values in rates.items()},
        "median_sentences_per_s": {"onnx": round(onnx_rate, 1), "torch": round(torch_rate, 1)},
        "load_s": {"torch": round(torch_load_s, 2), "onnx": round(onnx_load_s, 2)},
        "onnx_export_s": None
        if onnx_embedder.export_seconds is None
        else round(onnx_embedder.export_seconds, 2),
        "onnx_model_bytes": onnx_embedder.onnx_path.stat().st_size,
        "onnx_intra_op_threads": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    return [row], raw


def run(texts: int = 2000, batch_size: int = 64) -> list[dict[str, Any]]:
    """The benchmark's table rows as dicts with `Row`'s fields (`Row(**row)` rebuilds one)."""
    rows, _ = run_embedding(texts=texts, batch_size=batch_size)
    return [asdict(row) for row in rows]
