"""bench/gpu/gemma_triton_vs_hf.py without a GPU: it stops at once with a message that says what to do."""

from __future__ import annotations

import pytest

from bench.gpu import gemma_triton_vs_hf as bench


def test_a_missing_gpu_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["--device", "cuda:0"]) == 1
    assert "needs a CUDA GPU (or --device cpu to check the code)" in capsys.readouterr().err


def test_the_triton_model_source_is_valid_python() -> None:
    compile(bench.MODEL_PY, "model.py", "exec")  # written into the model repository at run time
