"""The request parsing of deploy/triton/models/gemma3_270m (sampling parameters -> llama.cpp)."""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

import pytest

from shared.infra.paths import DEPLOY_DIR

MODEL_FILE = DEPLOY_DIR / "triton" / "models" / "gemma3_270m" / "1" / "model.py"


@pytest.fixture(scope="module")
def model() -> Any:
    """The model module, imported with a stand-in for the backend's triton_python_backend_utils."""
    saved = sys.modules.get("triton_python_backend_utils")
    sys.modules["triton_python_backend_utils"] = types.ModuleType("triton_python_backend_utils")
    try:
        spec = importlib.util.spec_from_file_location("gemma3_270m_model", MODEL_FILE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["triton_python_backend_utils"]
        else:
            sys.modules["triton_python_backend_utils"] = saved
    return module


def test_defaults_are_greedy_with_no_truncation(model: Any) -> None:
    kwargs = model.completion_kwargs({})
    assert kwargs == {
        "max_tokens": model.DEFAULT_MAX_TOKENS,
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": 0,
        "min_p": 0.0,
        "repeat_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "stop": [],
    }


def test_json_parameters_override_the_tensors(model: Any) -> None:
    kwargs = model.completion_kwargs(
        {"max_tokens": 7, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 3, "stop": "\n\n"},
        max_tokens=128,
        temperature=0.0,
    )
    chosen = (kwargs["max_tokens"], kwargs["temperature"], kwargs["top_p"], kwargs["top_k"])
    assert chosen == (7, 0.7, 0.9, 40)
    assert kwargs["seed"] == 3
    assert kwargs["stop"] == ["\n\n"]


def test_tensors_apply_without_json_values(model: Any) -> None:
    kwargs = model.completion_kwargs({"stop": ["\nQuestion:", ""]}, max_tokens=12, temperature=0.5)
    assert (kwargs["max_tokens"], kwargs["temperature"]) == (12, 0.5)
    assert kwargs["stop"] == ["\nQuestion:"]  # empty stop strings would end every generation at once
    assert "seed" not in kwargs


def test_vllm_names_map_to_llama_cpp(model: Any) -> None:
    assert model.completion_kwargs({"repetition_penalty": 1.2})["repeat_penalty"] == 1.2
    assert model.completion_kwargs({"top_k": -1})["top_k"] == 0  # vLLM's "all tokens"
    extra = model.completion_kwargs({"token_delay_ms": 5, "something_else": "x"})  # ignored
    assert extra == model.completion_kwargs({})


@pytest.mark.parametrize(
    ("sampling", "reason"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 2.5}, "integer"),
        ({"temperature": -1}, "temperature"),
        ({"temperature": "hot"}, "number"),
        ({"top_p": 1.5}, "top_p"),
        ({"seed": -3}, "seed"),
        ({"seed": True}, "seed"),
        ({"stop": [1, 2]}, "stop"),
    ],
)
def test_bad_values_are_refused_with_the_reason(model: Any, sampling: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        model.completion_kwargs(sampling)


def test_sampling_parameters_must_be_an_object(model: Any) -> None:
    with pytest.raises(ValueError, match="JSON object"):
        model.completion_kwargs([1, 2])
