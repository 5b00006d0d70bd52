"""API-key tokens, scopes and hashing.

A token reads ``dsk_<id>_<secret>``: the id (12 hex digits) finds the stored key, the secret (43
URL-safe characters, 256 bits) proves it. Only ``HMAC-SHA256(pepper, secret)`` is stored; the pepper
(``DERMASYNTH_API_KEY_PEPPER``) lives outside the key store, so a copy of Redis alone cannot be used
to check guesses. Secrets are random, so a fast keyed hash is enough (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

TOKEN_PREFIX = "dsk"
_TOKEN = re.compile(r"^dsk_([0-9a-f]{12})_([A-Za-z0-9_\-]{43})$")


OWNER_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,62}$"
_OWNER = re.compile(OWNER_PATTERN)
DEFAULT_OWNER = "default"


class Scope(StrEnum):
    """What a key may do.

    ``engineer``: datasets, jobs and model versions of its owner; ``clinician``: predictions;
    ``deployer``: change which version of its owner's models is live (deploy, roll back);
    ``admin``: everything of every owner, and the audit trail; ``delegate``: may name the person it acts
    for in ``X-DermaSynth-On-Behalf-Of`` (the web app's service key behind an identity provider; grants no
    route by itself, and admin keys do not have it unless given).
    """

    ENGINEER = "engineer"
    CLINICIAN = "clinician"
    DEPLOYER = "deployer"
    ADMIN = "admin"
    DELEGATE = "delegate"


def check_owner(owner: str) -> str:
    """Return ``owner`` (a team or project) if well formed, else raise ValueError saying what is accepted."""
    if not _OWNER.match(owner):
        raise ValueError(
            f"owner {owner!r} is not valid: 1-63 lowercase letters, digits, '_' or '-', starting with a letter or digit"
        )
    return owner


class ApiKey(BaseModel):
    """A key as listed and as the gateway sees its caller (never holds the secret or its hash)."""

    id: str
    name: str
    scopes: list[Scope]
    owner: str = Field(default=DEFAULT_OWNER, description="the team or project whose resources the key reaches")
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def admin(self) -> bool:
        """Admin keys see and change the resources of every owner."""
        return Scope.ADMIN in self.scopes

    def may_see(self, owner: str) -> bool:
        """Whether this key reaches a resource of ``owner``."""
        return self.admin or owner == self.owner


class IssuedKey(BaseModel):
    """A new key and its token, shown once."""

    key: ApiKey
    token: str = Field(description="send as 'Authorization: Bearer <token>' or 'X-API-Key: <token>'")


class KeyRejected(Exception):
    """A token that does not authenticate; the message says why without echoing the token."""


def parse_token(token: str) -> tuple[str, str]:
    """Split a token into its key id and secret.

    Raises:
        KeyRejected: if the token is not shaped like a DermaSynth API key.
    """
    match = _TOKEN.match(token.strip())
    if match is None:
        raise KeyRejected(
            "malformed API key: expected 'dsk_<12 hex digits>_<43 characters>' as issued by `dermasynth keys create`"
        )
    return match.group(1), match.group(2)


def hash_secret(pepper: str, secret: str) -> str:
    """The stored form of a key's secret: hex HMAC-SHA256 keyed with the pepper."""
    return hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).hexdigest()
