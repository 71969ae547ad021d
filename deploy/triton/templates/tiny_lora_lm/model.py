# ruff: noqa: E402  (site-packages go on sys.path before the imports, as in deploy/triton/models)
"""tiny_lora_lm: the fine-tune loop's byte-level GPT-2 (+ a LoRA adapter), greedy, streamed.

A version directory holds `model.py` (this file), `base/` (the base model: config.json and
model.safetensors), optionally `adapter/` (a PEFT LoRA adapter, merged into the base at load) and
`manifest.json` (which job and adapter it came from). The fine-tune service copies them into a
temporary folder and renames it to the version number, so Triton only ever sees complete versions.

The generator's prompt (numbered "[n] passage" lines, then "Question: ..." and "Answer:") is
rewritten into the format the model was trained on (services/finetune/model.py `render_prompt`):
"Context: <first passage>\\nQuestion: <q>\\nAnswer:". Tokens are UTF-8 bytes (0-255) plus BOS 256,
EOS 257, PAD 258; generation stops at EOS, a newline or `max_tokens`.
"""

import os
import sys

# The python backend stub ignores PYTHONPATH (see deploy/triton/models/tiny_llm/1/model.py).
sys.path[:0] = [p for p in os.environ.get("LLMOPS_TRITON_PYTHONPATH", "").split(os.pathsep) if p]

import codecs
import json
import re

import numpy as np
import triton_python_backend_utils as pb_utils

BOS, EOS, PAD = 256, 257, 258
NEWLINE = 10
MAX_NEW_TOKENS = 96
CONTEXT_BYTES = 200
PASSAGE = re.compile(r"^\[\d+\]\s*(.+)$", re.MULTILINE)
QUESTION = re.compile(r"^Question:\s*(.*)$", re.MULTILINE)


def model_prompt(prompt):
    """The generator's template rewritten into the tiny model's own format (unchanged if no passage)."""
    passage, questions = PASSAGE.search(prompt), list(QUESTION.finditer(prompt))
    question = questions[-1] if questions else None  # the last "Question:" line is the one asked
    if passage is None or question is None:
        return prompt
    context = passage.group(1).strip().encode("utf-8")[:CONTEXT_BYTES].decode("utf-8", "ignore")
    return f"Context: {context}\nQuestion: {question.group(1).strip()}\nAnswer:"


def _optional_scalar(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return default if tensor is None else tensor.as_numpy().reshape(-1)[0]


class TritonPythonModel:
    def initialize(self, args):
        import torch
        from transformers import GPT2LMHeadModel

        torch.set_num_threads(1)
        self.torch = torch
        self.version = args["model_version"]
        folder = os.path.join(args["model_repository"], args["model_version"])
        model = GPT2LMHeadModel.from_pretrained(os.path.join(folder, "base"), local_files_only=True)
        adapter = os.path.join(folder, "adapter")
        if os.path.isdir(adapter):
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        self.model = model.eval()
        self.max_positions = int(self.model.config.n_positions)

    def _generate(self, prompt, max_new_tokens):
        """Yield generated token ids one by one (greedy, with the key/value cache)."""
        torch = self.torch
        ids = [BOS, *model_prompt(prompt).encode("utf-8")][-(self.max_positions - max_new_tokens) :]
        past, inputs = None, torch.tensor([ids])
        with torch.no_grad():
            for _ in range(max_new_tokens):
                out = self.model(input_ids=inputs, past_key_values=past, use_cache=True)
                past = out.past_key_values
                token = int(out.logits[0, -1].argmax())
                if token >= 256 or token == NEWLINE:
                    return
                yield token
                inputs = torch.tensor([[token]])

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                prompt = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0]
                prompt = prompt.decode() if isinstance(prompt, bytes) else str(prompt)
                max_tokens = int(_optional_scalar(request, "max_tokens", 64))
                params = _optional_scalar(request, "sampling_parameters", b"")
                sampling = json.loads(params) if params else {}
                max_tokens = min(max(int(sampling.get("max_tokens", max_tokens)), 1), MAX_NEW_TOKENS)
                stream = bool(_optional_scalar(request, "stream", True))
                decoder = codecs.getincrementaldecoder("utf-8")("replace")
                pieces = []
                for token in self._generate(prompt, max_tokens):
                    piece = decoder.decode(bytes([token]))
                    if piece and stream:
                        self._send(sender, piece)
                    pieces.append(piece)
                tail = decoder.decode(b"", final=True)
                if stream and tail:
                    self._send(sender, tail)
                if not stream:
                    self._send(sender, "".join(pieces) + tail)
            except Exception as exc:  # the caller gets the reason instead of a hung stream
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"tiny_lora_lm: {exc}")))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    @staticmethod
    def _send(sender, piece):
        out = pb_utils.Tensor("text_output", np.array([piece.encode()], dtype=np.object_))
        sender.send(pb_utils.InferenceResponse(output_tensors=[out]))
