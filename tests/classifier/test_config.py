from __future__ import annotations

import pytest
from pydantic import ValidationError

from dermasynth.classifier.config import TrainConfig


def test_defaults_follow_the_paper_and_round_trip_through_json() -> None:
    config = TrainConfig()
    assert (config.model, config.optimizer, config.lr, config.balance, config.weights) == (
        "resnet18",
        "adam",
        1e-3,
        "sampler",
        None,
    )
    assert TrainConfig.model_validate_json(config.model_dump_json()) == config


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"model": "resnet9000"}, "resnet9000"),
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"image_size": 8}, "image_size"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"balance": "oversample"}, "balance"),
        ({"amp_dtype": "bf16"}, "needs amp=True"),
        ({"freeze_epochs": 1}, "needs pretrained weights"),
        ({"freeze_epochs": 3, "epochs": 3, "weights": "w.pth"}, "less than epochs"),
        ({"device": "tpu"}, "tpu"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"learning_rate": 0.1}, "learning_rate"),
    ],
)
def test_bad_options_are_refused_with_their_name(options: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        TrainConfig.model_validate(options)


def test_unknown_model_lists_accepted_names() -> None:
    with pytest.raises(ValidationError, match=r"accepted: .*densenet121"):
        TrainConfig(model="resnet9000")


def test_result_fields_leave_out_runtime_options() -> None:
    a = TrainConfig(num_workers=0, device="cpu")
    b = TrainConfig(num_workers=4, device="auto", log_every=1)
    assert a.result_fields() == b.result_fields()
    assert TrainConfig(seed=1).result_fields() != a.result_fields()
