"""API keys: issued once, stored only as a peppered hash, with scopes; revoked keys stop working at once."""

from __future__ import annotations

from dermasynth.auth.keys import (
    DEFAULT_OWNER,
    OWNER_PATTERN,
    ApiKey,
    IssuedKey,
    KeyRejected,
    Scope,
    check_owner,
    hash_secret,
    parse_token,
)
from dermasynth.auth.store import ApiKeyStore, KeyNotFound, RedisApiKeyStore

__all__ = [
    "DEFAULT_OWNER",
    "OWNER_PATTERN",
    "ApiKey",
    "ApiKeyStore",
    "IssuedKey",
    "KeyNotFound",
    "KeyRejected",
    "RedisApiKeyStore",
    "Scope",
    "check_owner",
    "hash_secret",
    "parse_token",
]
