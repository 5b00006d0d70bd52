"""The naive baseline of bench/inference.py: a single-threaded Flask app that runs the eager model once
per request, as the paper's demo server did. Not part of DermaSynth; only the benchmark starts it.

    python bench/naive_server.py --port 5000 --weights eager.pth --contract contract.json [--device cuda]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from flask import Flask, Response, jsonify, request

from dermasynth.classifier.models import build_model
from dermasynth.data.images import load_rgb
from dermasynth.serving.contract import ServingContract


def make_app(weights: Path, contract: ServingContract, device: torch.device) -> Flask:
    model = build_model(contract.architecture, len(contract.classes))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.to(device).eval()
    transform = contract.preprocessing.eval_transform()
    app = Flask("naive")

    @app.post("/predict")
    def predict() -> Response:
        image = load_rgb(request.files["image"].read())
        with torch.no_grad():
            probabilities = torch.softmax(model(transform(image).unsqueeze(0).to(device)), dim=1)[0].cpu()
        top = torch.topk(probabilities, 3)
        return jsonify(
            [
                {"label": contract.classes[i], "probability": float(p)}
                for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
            ]
        )

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--contract", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    contract = ServingContract.model_validate_json(args.contract.read_text())
    make_app(args.weights, contract, torch.device(args.device)).run("127.0.0.1", args.port, threaded=False)
