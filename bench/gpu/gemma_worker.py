"""The generation worker behind the GPU benchmark's Triton model (gemma_triton_vs_hf.py).

tritonserver 2.51's python backend stub reads and writes numpy arrays through a pybind11 built for
numpy 1.x: under numpy 2.x the stub dies at the first request ("Stub process is not healthy"; seen
with 2.5.5, while 1.26.4 works). GPU images ship numpy 2 beneath torch, and torch there does not run
on numpy 1.26. So the stub keeps numpy<2 and handles only strings, and the model runs here, in a
process of the benchmark's own interpreter, fed over pipes: one JSON line per batch in, one JSON line
per streamed piece out. The pipe hop costs tens of microseconds per piece against milliseconds per
decoding step, and it is part of what the Triton rows measure.

Protocol (stdin/stdout, UTF-8 JSON lines):
    out  {"ready": true}                                     once the model is loaded
    in   {"prompts": [...], "limits": [...], "ignore_eos": bool}
    out  {"row": i, "text": "..."}                           each new piece of row i
    out  {"done": true}                                      the batch is finished
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for bench.gpu.gemma_weights

from bench.gpu.gemma_weights import load_gemma


class PieceStreamer:
    """generate() calls put() with the prompt ids, then with each step's new token of every row; each
    row's newly decodable text is written out as it appears (held back while it ends mid-character)."""

    def __init__(self, tokenizer: Any, limits: list[int], out: TextIO) -> None:
        self.tokenizer, self.limits, self.out = tokenizer, limits, out
        self.ids: list[list[int]] = [[] for _ in limits]
        self.sent = [0] * len(limits)
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if len(self.ids[row]) >= self.limits[row]:
                continue
            self.ids[row].append(token)
            text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
            if len(text) > self.sent[row] and not text.endswith("\ufffd"):
                self.out.write(json.dumps({"row": row, "text": text[self.sent[row] :]}) + "\n")
                self.out.flush()
                self.sent[row] = len(text)

    def end(self) -> None:
        pass


def serve(tokenizer: Any, model: Any, device: str, lines: TextIO, out: TextIO) -> None:
    import torch

    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in lines:
        job = json.loads(line)
        limits = [int(limit) for limit in job["limits"]]
        batch = tokenizer(job["prompts"], return_tensors="pt", padding=True).to(device)
        with torch.inference_mode():
            model.generate(
                **batch,
                max_new_tokens=max(limits),
                min_new_tokens=max(limits) if job.get("ignore_eos") else 0,
                do_sample=False,
                streamer=PieceStreamer(tokenizer, limits, out),
            )
        out.write(json.dumps({"done": True}) + "\n")
        out.flush()


def main() -> int:
    device = os.environ["BENCH_DEVICE"]
    tokenizer, model = load_gemma(Path(os.environ["BENCH_GGUF"]), device)  # as the baseline loads it
    serve(tokenizer, model, device, sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
