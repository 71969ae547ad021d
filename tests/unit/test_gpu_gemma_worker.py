"""bench/gpu/gemma_worker.py: the protocol between the GPU benchmark's Triton model and the process that
generates (a fake model and tokenizer stand in for Gemma)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from bench.gpu import gemma_worker

PARTIAL = 99  # an id that decodes to half a character until the next one completes it


class _Batch(dict[str, Any]):
    def to(self, device: str) -> _Batch:
        return self


class _Tokenizer:
    def __call__(self, prompts: list[str], **_: Any) -> _Batch:
        return _Batch(input_ids=np.zeros((len(prompts), 3), dtype=np.int64))

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        text = "".join("\ufffd" if i == PARTIAL else chr(ord("a") + i) for i in ids)
        return text.replace("\ufffda", "é")  # PARTIAL followed by 0 is one character


class _Model:
    """generate() as transformers streams: the prompt ids first, then one column of new ids per step."""

    def __init__(self, steps: list[list[int]]) -> None:
        self.steps = steps
        self.calls: list[dict[str, Any]] = []

    def generate(self, **kwargs: Any) -> None:
        self.calls.append({k: v for k, v in kwargs.items() if k != "streamer"})
        streamer = kwargs["streamer"]
        streamer.put(kwargs["input_ids"])
        for column in self.steps[: kwargs["max_new_tokens"]]:
            streamer.put(np.array(column, dtype=np.int64).reshape(-1, 1))
        streamer.end()


def _run(model: _Model, *jobs: dict[str, Any]) -> list[dict[str, Any]]:
    lines = io.StringIO("".join(json.dumps(job) + "\n" for job in jobs))
    out = io.StringIO()
    gemma_worker.serve(_Tokenizer(), model, "cpu", lines, out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_each_row_streams_its_own_text_up_to_its_limit() -> None:
    model = _Model([[0, 3], [1, 4], [2, 5], [3, 6]])
    messages = _run(model, {"prompts": ["p", "q"], "limits": [4, 2], "ignore_eos": True})
    assert messages[0] == {"ready": True} and messages[-1] == {"done": True}
    rows: dict[int, str] = {0: "", 1: ""}
    for message in messages[1:-1]:
        rows[message["row"]] += message["text"]
    assert rows == {0: "abcd", 1: "de"}  # row 1 stops at its limit of 2 while row 0 goes on
    # one generate for the batch, as long as the longest request; EOS ignored when asked
    assert model.calls[0]["max_new_tokens"] == 4 and model.calls[0]["min_new_tokens"] == 4


def test_half_a_character_is_held_back_until_it_is_whole() -> None:
    model = _Model([[1], [PARTIAL], [0], [2]])
    messages = _run(model, {"prompts": ["p"], "limits": [4]})
    pieces = [m["text"] for m in messages if "text" in m]
    assert pieces == ["b", "é", "c"]  # never the replacement character
    assert model.calls[0]["min_new_tokens"] == 0  # EOS may end it early


def test_batches_are_served_one_after_another() -> None:
    model = _Model([[0], [1]])
    messages = _run(model, {"prompts": ["p"], "limits": [1]}, {"prompts": ["p"], "limits": [2]})
    assert [m for m in messages if "done" in m] == [{"done": True}, {"done": True}]
    texts = [m["text"] for m in messages if "text" in m]
    assert texts == ["a", "a", "b"]
