"""API keys kept in Redis: ``P:apikey:{id}`` holds one key (JSON with its hash), ``P:apikeys`` the ids."""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime
from typing import Protocol

import redis

from dermasynth.auth.keys import (
    DEFAULT_OWNER,
    TOKEN_PREFIX,
    ApiKey,
    IssuedKey,
    KeyRejected,
    Scope,
    check_owner,
    hash_secret,
    parse_token,
)


class KeyNotFound(KeyError):
    """No API key with this id."""

    def __str__(self) -> str:
        return f"no API key with id {self.args[0]!r}"


class _StoredKey(ApiKey):
    hash: str


class ApiKeyStore(Protocol):
    """Creates, revokes, lists and checks API keys."""

    def create(self, name: str, scopes: list[Scope], owner: str = DEFAULT_OWNER) -> IssuedKey:
        """Issue a key for ``owner`` (a team or project); its token is returned once and never stored."""

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (idempotent). Raises :class:`KeyNotFound`."""

    def list(self, include_revoked: bool = True) -> list[ApiKey]:
        """Every key, oldest first."""

    def authenticate(self, token: str) -> ApiKey:
        """The live key a token belongs to. Raises :class:`KeyRejected` saying why."""


class RedisApiKeyStore:
    """The :class:`ApiKeyStore` on Redis."""

    def __init__(self, client: redis.Redis, pepper: str, prefix: str = "dermasynth") -> None:
        self.redis = client
        self.pepper = pepper
        self.prefix = prefix

    def _key(self, key_id: str) -> str:
        return f"{self.prefix}:apikey:{key_id}"

    @property
    def _index(self) -> str:
        return f"{self.prefix}:apikeys"

    def create(self, name: str, scopes: list[Scope], owner: str = DEFAULT_OWNER) -> IssuedKey:
        """Issue a key for ``owner``: the team or project whose datasets, jobs and models it reaches.

        Raises:
            ValueError: for an empty name, no scopes or a malformed owner.
        """
        check_owner(owner)
        name = name.strip()
        if not name or len(name) > 100:
            raise ValueError(f"key name {name!r} must be 1-100 characters")
        if not scopes:
            raise ValueError(f"a key needs at least one scope: {', '.join(s.value for s in Scope)}")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        stored = _StoredKey(
            id=key_id,
            name=name,
            scopes=sorted(set(scopes)),
            owner=owner,
            created_at=datetime.now(UTC),
            hash=hash_secret(self.pepper, secret),
        )
        if not self.redis.set(self._key(key_id), stored.model_dump_json(), nx=True):
            return self.create(name, scopes, owner)  # a 48-bit id collided: draw again
        self.redis.sadd(self._index, key_id)
        return IssuedKey(
            key=ApiKey.model_validate(stored.model_dump(exclude={"hash"})), token=f"{TOKEN_PREFIX}_{key_id}_{secret}"
        )

    def _stored(self, key_id: str) -> _StoredKey:
        raw = self.redis.get(self._key(key_id))
        if raw is None:
            raise KeyNotFound(key_id)
        return _StoredKey.model_validate_json(raw)

    def revoke(self, key_id: str) -> ApiKey:
        stored = self._stored(key_id)
        if stored.revoked_at is None:
            stored.revoked_at = datetime.now(UTC)
            self.redis.set(self._key(key_id), stored.model_dump_json())
        return ApiKey.model_validate(stored.model_dump(exclude={"hash"}))

    def list(self, include_revoked: bool = True) -> list[ApiKey]:
        ids = sorted(i.decode() if isinstance(i, bytes) else i for i in self.redis.smembers(self._index))
        keys = []
        for raw in self.redis.mget([self._key(i) for i in ids]) if ids else []:
            if raw is None:
                continue
            key = ApiKey.model_validate(_StoredKey.model_validate_json(raw).model_dump(exclude={"hash"}))
            if include_revoked or not key.revoked:
                keys.append(key)
        return sorted(keys, key=lambda k: k.created_at)

    def authenticate(self, token: str) -> ApiKey:
        key_id, secret = parse_token(token)
        try:
            stored = self._stored(key_id)
        except KeyNotFound:
            raise KeyRejected("unknown API key") from None
        if not hmac.compare_digest(stored.hash, hash_secret(self.pepper, secret)):
            raise KeyRejected("unknown API key")
        if stored.revoked_at is not None:
            raise KeyRejected(f"API key {key_id} was revoked at {stored.revoked_at.isoformat()}")
        return ApiKey.model_validate(stored.model_dump(exclude={"hash"}))
