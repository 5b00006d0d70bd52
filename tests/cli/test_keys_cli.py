"""``dermasynth keys create|list|revoke`` against a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from typer.testing import CliRunner

from dermasynth.auth import KeyRejected, RedisApiKeyStore
from dermasynth.cli import app
from dermasynth.config import get_settings

runner = CliRunner()


@pytest.fixture
def keys(redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisApiKeyStore]:
    monkeypatch.setenv("DERMASYNTH_REDIS_URL", redis_url)
    monkeypatch.setenv("DERMASYNTH_JOB_KEY_PREFIX", redis_prefix)
    monkeypatch.setenv("DERMASYNTH_API_KEY_PEPPER", "cli-pepper")
    get_settings.cache_clear()
    yield RedisApiKeyStore(redis.Redis.from_url(redis_url), "cli-pepper", redis_prefix)
    get_settings.cache_clear()


def test_create_list_revoke(keys: RedisApiKeyStore) -> None:
    result = runner.invoke(
        app, ["keys", "create", "--name", "ci", "--scope", "engineer", "--scope", "clinician", "--owner", "derm-lab"]
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    key = keys.authenticate(token)
    assert key.name == "ci" and [s.value for s in key.scopes] == ["clinician", "engineer"]
    assert key.owner == "derm-lab"
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0 and key.id in listed.stdout and token not in listed.stdout
    assert "derm-lab" in listed.stdout
    assert runner.invoke(app, ["keys", "revoke", key.id]).exit_code == 0
    with pytest.raises(KeyRejected, match="revoked"):
        keys.authenticate(token)
    assert key.id not in runner.invoke(app, ["keys", "list"]).stdout
    assert key.id in runner.invoke(app, ["keys", "list", "--all"]).stdout


def test_errors_are_clear(keys: RedisApiKeyStore) -> None:
    result = runner.invoke(app, ["keys", "revoke", "000000000000"])
    assert result.exit_code == 1 and "no API key with id" in result.output
    result = runner.invoke(app, ["keys", "create", "--name", "x", "--scope", "superuser", "--owner", "t"])
    assert result.exit_code != 0 and "superuser" in result.output
    result = runner.invoke(app, ["keys", "create", "--name", "x", "--scope", "engineer"])
    assert result.exit_code != 0 and "--owner" in result.output
    result = runner.invoke(app, ["keys", "create", "--name", "x", "--scope", "engineer", "--owner", "../Team A"])
    assert result.exit_code == 1 and "owner '../Team A' is not valid" in result.output
