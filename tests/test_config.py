from __future__ import annotations

import pytest
from pydantic import ValidationError

from dermasynth.config import Settings


def test_reads_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERMASYNTH_REDIS_URL", "redis://example:6380/3")
    monkeypatch.setenv("DERMASYNTH_MAX_PREDICTION_IMAGES", "8")
    settings = Settings()
    assert settings.redis_url == "redis://example:6380/3"
    assert settings.max_prediction_images == 8


def test_rejects_invalid_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERMASYNTH_MAX_IMAGE_PIXELS", "-5")
    with pytest.raises(ValidationError, match="max_image_pixels"):
        Settings()


def test_production_refuses_default_secrets() -> None:
    with pytest.raises(ValidationError, match="DERMASYNTH_API_KEY_PEPPER"):
        Settings(environment="production")
    with pytest.raises(ValidationError, match="DERMASYNTH_S3_SECRET_KEY"):
        Settings(environment="production", store="s3", api_key_pepper="a-real-pepper-value")


def test_production_accepts_real_secrets() -> None:
    settings = Settings(
        environment="production", store="s3", api_key_pepper="9f86d081884c7d65", s3_secret_key="60303ae22b998861"
    )
    assert settings.environment == "production"


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("api_key_pepper", "change-me", "DERMASYNTH_API_KEY_PEPPER"),
        ("s3_secret_key", "change-me-too-please-now", "DERMASYNTH_S3_SECRET_KEY"),
        ("s3_secret_key", "", "DERMASYNTH_S3_SECRET_KEY"),
        ("redis_url", "redis://:short@redis:6379/0", "DERMASYNTH_REDIS_URL"),
        ("redis_url", "redis://:CHANGEME-0123456789abcdef@redis:6379/0", "DERMASYNTH_REDIS_URL"),
        ("triton_admin_key", "placeholder-placeholder", "DERMASYNTH_TRITON_ADMIN_KEY"),
    ],
)
def test_production_refuses_placeholder_secrets(field: str, value: str, named: str) -> None:
    real = {"store": "s3", "api_key_pepper": "9f86d081884c7d65", "s3_secret_key": "60303ae22b998861"}
    with pytest.raises(ValueError, match=named):
        Settings(environment="production", **{**real, field: value})
    Settings(environment="development", **{**real, field: value})  # only production refuses them


def test_production_accepts_random_deployment_secrets() -> None:
    settings = Settings(
        environment="production",
        store="s3",
        api_key_pepper="9f86d081884c7d65a5c0",
        s3_secret_key="60303ae22b998861bce3",
        redis_url="redis://:3b5d5c3712955042212316173ccf37be@redis:6379/0",
        triton_admin_key="fd61a03af4f77d870fc2",
    )
    assert settings.triton_admin_key is not None and settings.log_format == "text"
