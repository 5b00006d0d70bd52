"""API keys in a real Redis: hashed with the pepper, scoped, revocable."""

from __future__ import annotations

import pytest
import redis

from dermasynth.auth import KeyNotFound, KeyRejected, RedisApiKeyStore, Scope, hash_secret, parse_token


@pytest.fixture
def keys(redis_url: str, redis_prefix: str) -> RedisApiKeyStore:
    return RedisApiKeyStore(redis.Redis.from_url(redis_url), "pepper-1", redis_prefix)


def test_issue_then_authenticate(keys: RedisApiKeyStore) -> None:
    issued = keys.create("ci bot", [Scope.ENGINEER, Scope.ENGINEER, Scope.CLINICIAN])
    assert issued.key.scopes == [Scope.CLINICIAN, Scope.ENGINEER]
    key = keys.authenticate(issued.token)
    assert key.id == issued.key.id and key.name == "ci bot" and not key.revoked


def test_only_a_peppered_hash_is_stored(keys: RedisApiKeyStore, redis_url: str) -> None:
    issued = keys.create("a", [Scope.ENGINEER])
    key_id, secret = parse_token(issued.token)
    raw = redis.Redis.from_url(redis_url).get(f"{keys.prefix}:apikey:{key_id}")
    assert raw is not None and secret.encode() not in raw
    assert hash_secret("pepper-1", secret).encode() in raw
    assert hash_secret("another pepper", secret) != hash_secret("pepper-1", secret)


def test_a_different_pepper_rejects_every_key(keys: RedisApiKeyStore) -> None:
    issued = keys.create("a", [Scope.ENGINEER])
    other = RedisApiKeyStore(keys.redis, "pepper-2", keys.prefix)
    with pytest.raises(KeyRejected, match="unknown API key"):
        other.authenticate(issued.token)


@pytest.mark.parametrize("token", ["", "Bearer x", "dsk_123_abc", "dsk_zzzzzzzzzzzz_" + "a" * 43])
def test_malformed_tokens(keys: RedisApiKeyStore, token: str) -> None:
    with pytest.raises(KeyRejected, match="malformed"):
        keys.authenticate(token)


def test_wrong_secret_and_unknown_id(keys: RedisApiKeyStore) -> None:
    issued = keys.create("a", [Scope.ENGINEER])
    key_id, secret = parse_token(issued.token)
    forged = f"dsk_{key_id}_{'A' * 43}"
    with pytest.raises(KeyRejected, match="unknown"):
        keys.authenticate(forged)
    with pytest.raises(KeyRejected, match="unknown"):
        keys.authenticate(f"dsk_{'0' * 12}_{secret}")


def test_revoke_list(keys: RedisApiKeyStore) -> None:
    first = keys.create("first", [Scope.ENGINEER])
    second = keys.create("second", [Scope.CLINICIAN])
    revoked = keys.revoke(first.key.id)
    assert revoked.revoked and keys.revoke(first.key.id).revoked_at == revoked.revoked_at
    with pytest.raises(KeyRejected, match="revoked"):
        keys.authenticate(first.token)
    assert keys.authenticate(second.token).id == second.key.id
    assert [k.name for k in keys.list()] == ["first", "second"]
    assert [k.name for k in keys.list(include_revoked=False)] == ["second"]
    with pytest.raises(KeyNotFound):
        keys.revoke("000000000000")


def test_create_refuses_bad_names_and_no_scopes(keys: RedisApiKeyStore) -> None:
    with pytest.raises(ValueError, match="name"):
        keys.create("  ", [Scope.ENGINEER])
    with pytest.raises(ValueError, match="scope"):
        keys.create("x", [])
