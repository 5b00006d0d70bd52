"""S3 / MinIO object store over HTTP, through the minio SDK."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

from minio import Minio
from minio.commonconfig import CopySource
from minio.error import S3Error

from dermasynth.storage.base import ObjectNotFound, check_key, check_prefix

_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound"}


class S3Store:
    """Objects in one bucket of an S3-compatible server; the bucket is created when absent.

    ``public_endpoint`` is the address users reach the server at when it differs from the one services
    use (``minio:9000`` inside compose or a cluster): presigned URLs are signed for that host. Signing
    is local; the region is given, so no request goes to the public address.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str = "us-east-1",
        public_endpoint: str | None = None,
        public_secure: bool | None = None,
    ) -> None:
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region)
        self.signer = (
            self.client
            if public_endpoint is None
            else Minio(
                public_endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=secure if public_secure is None else public_secure,
                region=region,
            )
        )
        self.bucket = bucket
        if not self.client.bucket_exists(bucket_name=bucket):
            self.client.make_bucket(bucket_name=bucket)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(
            bucket_name=self.bucket,
            object_name=check_key(key),
            data=io.BytesIO(data),
            length=len(data),
            content_type=content_type,
        )

    def get_bytes(self, key: str) -> bytes:
        response = None
        try:
            response = self.client.get_object(bucket_name=self.bucket, object_name=check_key(key))
            return response.read()
        except S3Error as exc:
            raise _translate(exc, key) from exc
        finally:
            if response is not None:
                response.close()
                response.release_conn()

    def put_file(self, key: str, path: Path) -> None:
        self.client.fput_object(bucket_name=self.bucket, object_name=check_key(key), file_path=str(path))

    def get_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.fget_object(bucket_name=self.bucket, object_name=check_key(key), file_path=str(path))
        except S3Error as exc:
            raise _translate(exc, key) from exc

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        try:
            stat = self.client.stat_object(bucket_name=self.bucket, object_name=check_key(key))
        except S3Error as exc:
            raise _translate(exc, key) from exc
        return int(stat.size or 0)

    def list(self, prefix: str = "") -> list[str]:
        objects = self.client.list_objects(bucket_name=self.bucket, prefix=check_prefix(prefix) or None, recursive=True)
        return sorted(o.object_name for o in objects if o.object_name and not o.is_dir)

    def delete(self, key: str) -> None:
        self.client.remove_object(bucket_name=self.bucket, object_name=check_key(key))

    def copy(self, src: str, dst: str) -> None:
        try:
            self.client.copy_object(
                bucket_name=self.bucket,
                object_name=check_key(dst),
                source=CopySource(bucket_name=self.bucket, object_name=check_key(src)),
            )
        except S3Error as exc:
            raise _translate(exc, src) from exc

    def presigned_url(self, key: str, expires: timedelta) -> str | None:
        return self.signer.presigned_get_object(bucket_name=self.bucket, object_name=check_key(key), expires=expires)


def _translate(exc: S3Error, key: str) -> Exception:
    return ObjectNotFound(key) if exc.code in _MISSING else exc
