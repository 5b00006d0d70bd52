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
