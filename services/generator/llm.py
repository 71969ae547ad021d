"""Streaming generation through Triton's gRPC API (asyncio), with the LLM backends' tensor names.

The request carries `text_input`, `max_tokens`, `stream` and `sampling_parameters` (JSON), and each
response a `text_output` piece: the contract of Triton's vLLM and TensorRT-LLM backends, so those can
replace the local python-backend models without touching the generator.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

from services.generator.routing import ModelTarget
from shared.errors import PermanentError, RetryableError

_TRANSIENT_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
}
# Triton status texts that mean "try again": server down or restarting, model (re)loading.
_TRANSIENT_MARKERS = (
    "unavailable",
    "not ready",
    "unknown model",
    "connection",
    "deadline",
    "failed to connect",
)


def classify(exc: InferenceServerException) -> Exception:
    """RetryableError for a down server or an unloaded model, PermanentError for a bad request."""
    text = f"{exc.status() or ''} {exc.message() or ''}".lower()
    if any(marker in text for marker in _TRANSIENT_MARKERS):
        return RetryableError(f"Triton: {exc.message()}")
    return PermanentError(f"Triton rejected the request: {exc.message()}")


def _tensor(name: str, value: Any, datatype: str) -> InferInput:
    array = np.array([value], dtype=np.object_ if datatype == "BYTES" else None)
    if datatype == "INT32":
        array = array.astype(np.int32)
    elif datatype == "FP32":
        array = array.astype(np.float32)
    elif datatype == "BOOL":
        array = array.astype(np.bool_)
    tensor = InferInput(name, [1], datatype)
    tensor.set_data_from_numpy(array)
    return tensor


class TritonLLM:
    """One async gRPC client per process, created in the generator's lifespan."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = triton_aio.InferenceServerClient(url)

    async def close(self) -> None:
        await self._client.close()

    async def stream(
        self,
        target: ModelTarget,
        prompt: str,
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
        timeout_s: float = 30.0,
        request_id: str = "",
        extra_sampling: dict[str, Any] | None = None,
    ) -> AsyncIterator[str]:
        """Yield answer pieces as Triton produces them; stop sequences end the stream early."""
        sampling = {
            **(extra_sampling or {}),
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stop": list(stop),
        }
        inputs = [
            _tensor("text_input", prompt.encode("utf-8"), "BYTES"),
            _tensor("max_tokens", max_tokens, "INT32"),
            _tensor("stream", True, "BOOL"),
            _tensor("temperature", temperature, "FP32"),
            _tensor("sampling_parameters", json.dumps(sampling).encode(), "BYTES"),
        ]

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {
                "model_name": target.model,
                "model_version": target.version,
                "inputs": inputs,
                "request_id": request_id,
                # Decoupled models end a request with a flag-only response; ask to see it.
                "parameters": {"triton_enable_empty_final_response": True},
            }

        text = ""
        responses = self._client.stream_infer(requests(), stream_timeout=timeout_s)
        try:
            async for result, error in responses:
                if error is not None:
                    raise classify(error)
                final = result.get_response().parameters.get("triton_final_response")
                output = result.as_numpy("text_output")
                if output is not None and output.size:
                    piece = b"".join(
                        x if isinstance(x, bytes) else str(x).encode() for x in output.reshape(-1)
                    ).decode("utf-8", "replace")
                    cut = _first_stop(text + piece, stop)
                    if cut is not None:
                        if cut > len(text):
                            yield (text + piece)[len(text) : cut]
                        return
                    text += piece
                    yield piece
                if final is not None and final.bool_param:
                    return
        except InferenceServerException as exc:
            raise classify(exc) from exc
        except grpc.aio.AioRpcError as exc:  # the stream itself failed (server down, deadline)
            if exc.code() in _TRANSIENT_CODES:
                raise RetryableError(f"Triton at {self.url}: {exc.code().name}: {exc.details()}") from exc
            raise PermanentError(f"Triton at {self.url}: {exc.code().name}: {exc.details()}") from exc
        finally:
            responses.cancel()


def _first_stop(text: str, stop: Sequence[str]) -> int | None:
    positions = [i for s in stop if s and (i := text.find(s)) >= 0]
    return min(positions) if positions else None
