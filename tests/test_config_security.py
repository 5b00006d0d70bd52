"""Issue 12, finding 11: production refuses placeholder, empty and short secrets, root store users and a
Redis without a password; presigned artefact URLs are short-lived and signed with the service's own user."""

from __future__ import annotations

import secrets
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from dermasynth.config import Settings
from dermasynth.jobs.submission import list_artefacts
from dermasynth.storage import S3Store

STRONG = secrets.token_urlsafe(32)
REDIS = f"redis://:{secrets.token_urlsafe(32)}@redis:6379/0"


def _production(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "production",
        "store": "s3",
        "s3_access_key": "dermasynth-worker",
        "s3_secret_key": secrets.token_hex(32),
        "api_key_pepper": STRONG,
        "redis_url": REDIS,
    }
    return Settings(**{**values, **overrides})


def test_strong_settings_are_accepted() -> None:
    assert _production().environment == "production"


@pytest.mark.parametrize("value", ["change-me", "change-me-too", "", "   ", "CHANGE_ME_" + "x" * 40])
@pytest.mark.parametrize("field", ["api_key_pepper", "s3_secret_key"])
def test_placeholders_and_empty_secrets_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match=r"placeholder|is empty"):
        _production(**{field: value})


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (secrets.token_hex(15), "at least 32 random bytes"),  # 30 characters
        ("a" * 64, "not random enough"),
        ("abcd" * 16, "not random enough"),
    ],
)
def test_short_or_low_entropy_secrets_are_refused(value: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        _production(api_key_pepper=value)


@pytest.mark.parametrize("user", ["minioadmin", "root", "admin", ""])
def test_the_object_store_root_user_is_refused(user: str) -> None:
    with pytest.raises(ValidationError, match="own least-privilege user"):
        _production(s3_access_key=user)


def test_redis_without_a_password_is_refused_and_a_weak_one_too() -> None:
    with pytest.raises(ValidationError, match="DERMASYNTH_REDIS_URL has no password"):
        _production(redis_url="redis://redis:6379/0")
    with pytest.raises(ValidationError, match="password in DERMASYNTH_REDIS_URL"):
        _production(redis_url="redis://:redis@redis:6379/0")
    assert _production(redis_url=f"redis://gateway:{secrets.token_hex(32)}@redis:6379/0")  # an ACL user


def test_development_keeps_its_laptop_defaults() -> None:
    assert Settings(environment="development").redis_url.startswith("redis://127.0.0.1")


def test_artefact_urls_are_short_lived_and_signed_by_the_service_user(s3_endpoint: str) -> None:
    store = S3Store(s3_endpoint, "dermasynth-gateway", "gateway-secret", f"t-{uuid.uuid4().hex[:12]}")
    job_id = uuid.uuid4().hex
    store.put_bytes(f"runs/{job_id}/metrics.json", b"{}")
    [artefact] = list_artefacts(store, job_id)
    assert artefact.url is not None
    query = parse_qs(urlsplit(artefact.url).query)
    assert int(query["X-Amz-Expires"][0]) <= Settings().artefact_url_ttl_s <= 900
    assert query["X-Amz-Credential"][0].startswith("dermasynth-gateway/")
