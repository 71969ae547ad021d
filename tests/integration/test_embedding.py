"""Both embedding backends load offline from the model package and give the same, meaningful vectors."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.embedder.embedding import (
    DIMENSIONS,
    MODEL_NAME,
    Embedder,
    OnnxEmbedder,
    TorchEmbedder,
    load_embedder,
    max_seq_length,
)

pytestmark = pytest.mark.integration

TEXTS = [
    "Kafka partitions let several consumers in a group read a topic in parallel.",
    "Simmer the onions in butter until golden, then add the garlic and a pinch of salt.",
    "How does the retriever rank passages for a tenant?",
    "",
    "Unicode: café, naïve, 日本語, emoji 😀 and math ∑ x².",
    " ".join(f"word{i}" for i in range(600)),  # far over 256 tokens: truncated the same way by both
    "short",
]


@pytest.fixture(scope="module")
def offline() -> Iterator[None]:
    """Any attempt to open a network connection while the fixtures load fails the test."""

    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access while loading the model: {address}")
        real_connect(self, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", guarded)
        yield


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh cache directory: the ONNX export runs in this test session."""
    path = tmp_path_factory.mktemp("llmops-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLMOPS_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def torch_embedder(offline: None) -> TorchEmbedder:
    return TorchEmbedder(batch_size=4)


@pytest.fixture(scope="module")
def onnx_embedder(offline: None, model_cache: Path) -> OnnxEmbedder:
    return OnnxEmbedder(batch_size=4)


def test_onnx_model_is_exported_once_into_the_cache(onnx_embedder: OnnxEmbedder, model_cache: Path) -> None:
    path = model_cache / "models" / "all-minilm-l6-v2" / "model.onnx"
    assert onnx_embedder.onnx_path == path
    assert onnx_embedder.export_seconds is not None
    assert path.stat().st_size > 50_000_000
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no half files left
    again = OnnxEmbedder()
    assert again.export_seconds is None  # reused from the cache
    np.testing.assert_allclose(again.embed(TEXTS), onnx_embedder.embed(TEXTS), atol=1e-6)


def test_stale_or_damaged_cache_file_is_exported_again(
    model_cache: Path, onnx_embedder: OnnxEmbedder
) -> None:
    damaged = model_cache / "damaged" / "model.onnx"
    damaged.parent.mkdir()
    damaged.write_bytes(b"\x08\x07half a protobuf")
    embedder = OnnxEmbedder(onnx_path=damaged)
    assert embedder.export_seconds is not None
    assert np.allclose(embedder.embed(TEXTS[:2]), onnx_embedder.embed(TEXTS[:2]), atol=1e-6)


@pytest.mark.parametrize("backend", ["torch_embedder", "onnx_embedder"])
def test_shapes_dtype_and_normalization(backend: str, request: pytest.FixtureRequest) -> None:
    embedder: Embedder = request.getfixturevalue(backend)
    assert embedder.model_name == MODEL_NAME == "sentence-transformers/all-MiniLM-L6-v2"
    assert embedder.dimensions == DIMENSIONS == 384
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    empty = embedder.embed([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    with pytest.raises(TypeError):
        embedder.embed("a single string")


def test_torch_and_onnx_agree(torch_embedder: TorchEmbedder, onnx_embedder: OnnxEmbedder) -> None:
    a = torch_embedder.embed(TEXTS)
    b = onnx_embedder.embed(TEXTS)
    cosines = (a * b).sum(axis=1)
    assert cosines.min() > 0.999, cosines


def test_onnx_keeps_input_order_across_batches(onnx_embedder: OnnxEmbedder) -> None:
    vectors = onnx_embedder.embed(TEXTS)
    reversed_vectors = onnx_embedder.embed(TEXTS[::-1])
    np.testing.assert_allclose(reversed_vectors[::-1], vectors, atol=1e-5)
    one_by_one = np.vstack([onnx_embedder.embed([t]) for t in TEXTS])
    np.testing.assert_allclose(one_by_one, vectors, atol=1e-5)


def test_truncation_matches_sentence_transformers_config(onnx_embedder: OnnxEmbedder) -> None:
    assert max_seq_length() == onnx_embedder.max_seq_length == 256
    long_text = TEXTS[5]
    words = long_text.split()
    # Both inputs truncate to the same first 254 content tokens, so the vectors are equal.
    np.testing.assert_allclose(
        onnx_embedder.embed([long_text]), onnx_embedder.embed([" ".join(words[:300])]), atol=1e-6
    )


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_semantic_similarity(backend: str, model_cache: Path, offline: None) -> None:
    embedder = load_embedder(backend, batch_size=8)  # type: ignore[arg-type]
    query, kafka, cooking = embedder.embed(
        [
            "how many kafka partitions should a topic have?",
            "A Kafka topic is split into partitions that consumers read in parallel.",
            "Simmer the onions in butter until golden, then add garlic.",
        ]
    )
    assert float(query @ kafka) > float(query @ cooking) + 0.3


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown embedding backend"):
        load_embedder("tensorflow")  # type: ignore[arg-type]
