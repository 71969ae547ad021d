"""tiny_llm: answers by copying, word by word, the first sentence of the first context passage.

Prompts mark passages as "[1] text...". With no passage it echoes the question's words. Fast and
deterministic, so tests can check streaming, citations and routing without a real LLM.
"""

import os
import sys

# The python backend stub starts an isolated interpreter that ignores PYTHONPATH. The local Triton
# (shared/infra/triton.py) names the platform's site-packages here; NVIDIA's container has its
# packages installed and leaves it unset.
sys.path[:0] = [p for p in os.environ.get("LLMOPS_TRITON_PYTHONPATH", "").split(os.pathsep) if p]

import json
import re
import time

import numpy as np
import triton_python_backend_utils as pb_utils

PASSAGE = re.compile(r"^\[(\d+)\]\s*(.+)$", re.MULTILINE)


def _answer_words(prompt: str) -> list[str]:
    match = PASSAGE.search(prompt)
    if match:
        sentence = re.split(r"(?<=[.!?])\s", match.group(2).strip(), maxsplit=1)[0]
        return [*sentence.split(), f"[{match.group(1)}]"]
    return prompt.split()[-12:]


def _optional_scalar(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return default if tensor is None else tensor.as_numpy().reshape(-1)[0]


class TritonPythonModel:
    def initialize(self, args):
        self.version = args["model_version"]

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            prompt = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0]
            prompt = prompt.decode() if isinstance(prompt, bytes) else str(prompt)
            max_tokens = int(_optional_scalar(request, "max_tokens", 64))
            params = _optional_scalar(request, "sampling_parameters", b"")
            sampling = json.loads(params) if params else {}
            max_tokens = int(sampling.get("max_tokens", max_tokens))
            # Benchmarks set a decode time per token, so overhead is measured at an LLM's cadence.
            delay_s = float(sampling.get("token_delay_ms", 0)) / 1000
            stream = bool(_optional_scalar(request, "stream", True))
            words = _answer_words(prompt)[:max_tokens]
            pieces = [w if i == 0 else " " + w for i, w in enumerate(words)] if stream else [" ".join(words)]
            for piece in pieces:
                if delay_s:
                    time.sleep(delay_s)
                out = pb_utils.Tensor("text_output", np.array([piece.encode()], dtype=np.object_))
                sender.send(pb_utils.InferenceResponse(output_tensors=[out]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
