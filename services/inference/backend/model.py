"""DermaSynth's local stand-in for Triton's ``onnxruntime`` backend, as a Python-based backend.

The tritonserver binary in the nvidia-pytriton wheel ships only the Python backend. Placed in the
backend directory as ``onnxruntime/model.py`` (beside ``python/libtriton_python.so``), this file serves
every model whose ``config.pbtxt`` says ``backend: "onnxruntime"``, as the official image's
onnxruntime backend does: it loads ``{version}/model.onnx`` into an onnxruntime session, feeds the
input by name, returns the outputs by name, and honours the ``intra_op_thread_count`` and
``inter_op_thread_count`` parameters (and ``allow_spinning``, off unless set to 1). So local and
production servers run the same graph with the same engine, from one model repository.

The stub's embedded interpreter finds its ``sys.prefix`` through ``python3`` on ``PATH``; the launcher
puts the serving virtual environment first there, so onnxruntime and numpy come from it.

Triton's dynamic batcher hands :meth:`TritonPythonModel.execute` several requests at once; they are
concatenated, run as one batch and split back, and a failure is reported on each request it hit.
Only the outputs a request asks for are computed (the CAM output is skipped unless requested).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """One instance of an ONNX model (Triton creates one per ``instance_group`` count)."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_thread_count") or 0)
        options.inter_op_num_threads = int(params.get("inter_op_thread_count") or 0)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle threads sleep instead of spinning unless the config asks for spinning (a dedicated server)
        options.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning") or "0")
        providers: list[Any] = ["CPUExecutionProvider"]
        if args["model_instance_kind"] == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])}))
        filename = config.get("default_model_filename") or "model.onnx"
        path = Path(args["model_repository"]) / args["model_version"] / filename
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self.input_name = config["input"][0]["name"]
        graph_outputs = {o.name for o in self.session.get_outputs()}
        self.output_names = [out["name"] for out in config["output"] if out["name"] in graph_outputs]
        pb_utils.Logger.log_info(
            f"{config['name']} version {args['model_version']}: {path.name} on {self.session.get_providers()[0]}, "
            f"outputs {self.output_names}, {options.intra_op_num_threads or 'default'} intra-op threads"
        )

    def _wanted(self, request: Any) -> list[str]:
        asked = set(request.requested_output_names() or [])
        return [n for n in self.output_names if n in asked] if asked else list(self.output_names)

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, (array, request) in enumerate(zip(arrays, requests, strict=True)):
            # only same-shaped images asking for the same outputs share a batch
            groups.setdefault((tuple(array.shape[1:]), tuple(self._wanted(request))), []).append(i)
        for (_, names), members in groups.items():
            try:
                batch = np.concatenate([arrays[i] for i in members])
                outputs = self.session.run(list(names), {self.input_name: batch})
            except Exception as exc:  # reported on each request of the group; the instance keeps serving
                error = pb_utils.TritonError(f"inference failed: {exc}")
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=error)
                continue
            start = 0
            for i in members:
                stop = start + arrays[i].shape[0]
                tensors = [pb_utils.Tensor(name, out[start:stop]) for name, out in zip(names, outputs, strict=True)]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start = stop
        return responses

    def finalize(self) -> None:
        pb_utils.Logger.log_info("model instance finalized")
