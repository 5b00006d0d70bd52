"""Object storage: one protocol, a filesystem backend (embedded default) and an S3/MinIO backend."""

from __future__ import annotations

from dermasynth.config import Settings
from dermasynth.storage.base import InvalidKey, ObjectNotFound, ObjectStore, check_key
from dermasynth.storage.filesystem import FilesystemStore
from dermasynth.storage.prefixed import PrefixedStore
from dermasynth.storage.s3 import S3Store

__all__ = [
    "FilesystemStore",
    "InvalidKey",
    "ObjectNotFound",
    "ObjectStore",
    "PrefixedStore",
    "S3Store",
    "check_key",
    "open_store",
]


def open_store(settings: Settings) -> ObjectStore:
    """The store the settings name: a local folder, or a bucket on an S3/MinIO server."""
    if settings.store == "s3":
        return S3Store(
            settings.s3_endpoint,
            settings.s3_access_key,
            settings.s3_secret_key.get_secret_value(),
            settings.s3_bucket,
            secure=settings.s3_secure,
            region=settings.s3_region,
            public_endpoint=settings.s3_public_endpoint,
            public_secure=settings.s3_public_secure,
        )
    return FilesystemStore(settings.store_root)
