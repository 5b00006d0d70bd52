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
        environment="production",
        store="s3",
        s3_access_key="dermasynth-gateway",
        api_key_pepper="Zq8v1Jk3nW5tR7yB0cX2mL4pH6sD9fG1aE3uI5oK7jQ",
        s3_secret_key="4f9a1c7e2b8d3f6a0e5c9b7d1a3f8e2c6b0d4a9f7e1c5b3d8a2f6e0c4b9d7a1f",
        redis_url="redis://:Tn2Wq8Ke4Ry6Uo0Ip3As5Df7Gh9Jk1Lz3Xc5Vb7Nm9Q@redis:6379/0",
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
    real: dict[str, str] = {
        "store": "s3",
        "s3_access_key": "dermasynth-gateway",
        "api_key_pepper": "9f86d081884c7d65a5c0f2e6b8d4a1c3e5f7091b2d4c6e8a",
        "s3_secret_key": "60303ae22b998861bce3d5f7a9c1e3b5d7f9a1c3e5b7d9f1",
        "redis_url": "redis://:3b5d5c3712955042212316173ccf37be9a8c7e6d5f4b3a21@redis:6379/0",
    }
    with pytest.raises(ValueError, match=named):
        Settings(environment="production", **{**real, field: value})
    Settings(environment="development", **{**real, field: value})  # only production refuses them


def test_production_accepts_random_deployment_secrets() -> None:
    settings = Settings(
        environment="production",
        store="s3",
        s3_access_key="dermasynth-gateway",
        api_key_pepper="9f86d081884c7d65a5c0f2e6b8d4a1c3e5f7091b2d4c6e8a",
        s3_secret_key="60303ae22b998861bce3d5f7a9c1e3b5d7f9a1c3e5b7d9f1",
        redis_url="redis://:3b5d5c3712955042212316173ccf37be9a8c7e6d5f4b3a21@redis:6379/0",
        triton_admin_key="fd61a03af4f77d870fc2b4e6a8c0e2f4a6b8c0d2e4f6a8b0",
    )
    assert settings.triton_admin_key is not None and settings.log_format == "text"
