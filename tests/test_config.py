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
    settings = Settings(environment="production", store="s3", api_key_pepper="pepper-x", s3_secret_key="s3cr3t")
    assert settings.environment == "production"
