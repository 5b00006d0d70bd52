"""DermaSynth's local stand-in for Triton's ``pytorch`` (libtorch) backend, as a Python-based backend.

The tritonserver binary in the nvidia-pytriton wheel ships only the Python backend. Placed in the
backend directory as ``pytorch/model.py`` (beside ``python/libtriton_python.so``), this file serves
every model whose ``config.pbtxt`` says ``backend: "pytorch"``, exactly as the official image's libtorch
backend would: it loads ``{version}/model.pt`` (TorchScript), feeds the first input, maps the outputs
to the ``<name>__<index>`` outputs in index order, and honours the ``INTRA_OP_THREAD_COUNT``,
``INTER_OP_THREAD_COUNT`` and ``INFERENCE_MODE`` parameters. So one model repository serves the
local server, compose and Kubernetes alike.

The stub's embedded interpreter finds its ``sys.prefix`` through ``python3`` on ``PATH``; the launcher
puts the serving virtual environment first there, so torch and numpy come from it.

Triton's dynamic batcher hands :meth:`TritonPythonModel.execute` several requests at once; they are
concatenated, run as one batch and split back, and a failure is reported on each request it hit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils


def _output_index(name: str) -> int:
    prefix, sep, index = name.rpartition("__")
    if not sep or not prefix or not index.isdigit():
        raise ValueError(f"output {name!r} does not follow the pytorch backend's <name>__<index> convention")
    return int(index)


class TritonPythonModel:
    """One instance of a TorchScript model (Triton creates one per ``instance_group`` count)."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        if int(params.get("INTRA_OP_THREAD_COUNT") or 0) > 0:
            torch.set_num_threads(int(params["INTRA_OP_THREAD_COUNT"]))
        if int(params.get("INTER_OP_THREAD_COUNT") or 0) > 0:
            torch.set_num_interop_threads(int(params["INTER_OP_THREAD_COUNT"]))
        self.inference_mode = params.get("INFERENCE_MODE", "true").lower() == "true"
        if args["model_instance_kind"] == "GPU":
            self.device = torch.device(f"cuda:{args['model_instance_device_id']}")
        else:
            self.device = torch.device("cpu")
        filename = config.get("default_model_filename") or "model.pt"
        path = Path(args["model_repository"]) / args["model_version"] / filename
        self.model = torch.jit.load(str(path), map_location=self.device).eval()
        self.input_name = config["input"][0]["name"]
        self.output_names = sorted((out["name"] for out in config["output"]), key=_output_index)
        pb_utils.Logger.log_info(
            f"{config['name']} version {args['model_version']}: {path.name} on {self.device}, "
            f"{torch.get_num_threads()} intra-op threads"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, array in enumerate(arrays):  # only same-shaped images can share a batch
            groups.setdefault(tuple(array.shape[1:]), []).append(i)
        for members in groups.values():
            try:
                outputs = self._run(np.concatenate([arrays[i] for i in members]))
            except Exception as exc:  # reported on each request of the group; the instance keeps serving
                error = pb_utils.TritonError(f"inference failed: {exc}")
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=error)
                continue
            start = 0
            for i in members:
                stop = start + arrays[i].shape[0]
                tensors = [
                    pb_utils.Tensor(name, out[start:stop]) for name, out in zip(self.output_names, outputs, strict=True)
                ]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start = stop
        return responses

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        inputs = torch.from_numpy(batch).to(self.device)
        context = torch.inference_mode() if self.inference_mode else torch.no_grad()
        with context:
            result = self.model(inputs)
        results = list(result) if isinstance(result, tuple | list) else [result]
        if len(results) != len(self.output_names):
            raise RuntimeError(f"the model returned {len(results)} outputs; the config names {self.output_names}")
        return [r.detach().cpu().numpy() for r in results]

    def finalize(self) -> None:
        pb_utils.Logger.log_info("model instance finalized")
