"""The Triton-served embedding model (deploy/triton/models/minilm_embed) agrees with the in-process one."""

from __future__ import annotations

import numpy as np
import pytest

from services.embedder.embedding import OnnxEmbedder, TritonEmbedder, load_embedder

pytestmark = pytest.mark.integration

TEXTS = [
    "Kafka partitions cap the parallelism of a consumer group.",
    "Weaviate keeps each tenant in its own shard.",
    "Knead the dough and let it rise for an hour.",
]


def test_triton_embeddings_match_onnx(triton: str) -> None:
    served = load_embedder("triton", batch_size=2, triton_url=triton)  # 2: the texts span two requests
    assert isinstance(served, TritonEmbedder)
    remote = served.embed(TEXTS)
    local = OnnxEmbedder().embed(TEXTS)
    assert remote.shape == (3, 384) and remote.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(remote, axis=1), 1.0, atol=1e-4)
    cosine = np.sum(remote * local, axis=1)
    assert cosine.min() > 0.999, cosine
    assert served.embed([]).shape == (0, 384)
