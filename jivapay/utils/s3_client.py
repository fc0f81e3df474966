"""The S3 object store (receipts and dispute evidence): upload, presigned read URLs, delete, bucket.

Configured by `S3_ENDPOINT_URL`, `S3_ACCESS_KEY`, `S3_SECRET_KEY`, `S3_REGION` and `S3_BUCKET_NAME`
(without an endpoint boto3 talks to AWS; without keys it uses its default credential chain).
Objects are written without an ACL, so they stay private to the bucket owner; clients read them only
through short-lived presigned URLs. Timeouts are short and retries few, so a dead endpoint fails a
request in seconds rather than holding it. Every botocore failure becomes a domain error: an
unreachable endpoint is `ServiceUnavailable` (503, `storage_unavailable`), anything the store
answered or refused is `StorageError` (502, `storage_error`). Nothing here touches the database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, Any

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from jivapay.config import get_settings
from jivapay.utils.exceptions import ServiceUnavailable, StorageError

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_SECONDS = 2
READ_TIMEOUT_SECONDS = 10
MAX_ATTEMPTS = 2  # the first try and one retry
DEFAULT_URL_TTL_SECONDS = 300
MAX_URL_TTL_SECONDS = 3600

_UNREACHABLE = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)


@dataclass(frozen=True)
class UploadResult:
    """What was stored: where, how big, and the SHA-256 of the bytes."""

    bucket: str
    key: str
    size: int
    sha256: str
    content_type: str
    etag: str | None


@lru_cache(maxsize=4)
def _client_for(
    endpoint_url: str | None, region: str, access_key: str | None, secret_key: str | None
) -> Any:
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        signature_version="s3v4",
        # Path style works with every S3-compatible server (MinIO, moto) and plain-IP endpoints.
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


def get_client() -> Any:
    """The boto3 S3 client for the current settings (one per distinct configuration)."""
    s = get_settings()
    return _client_for(s.S3_ENDPOINT_URL, s.S3_REGION, s.S3_ACCESS_KEY, s.S3_SECRET_KEY)


def bucket_name() -> str:
    return get_settings().S3_BUCKET_NAME


@contextmanager
def _storage_errors(action: str, key: str | None = None) -> Iterator[None]:
    """Translate botocore failures of `action` into the domain's 502/503 errors."""
    where = f" ({key})" if key else ""
    try:
        yield
    except _UNREACHABLE as exc:
        log.warning("s3_unreachable", action=action, key=key, error=str(exc))
        raise ServiceUnavailable(
            f"file storage is unreachable, could not {action}{where}; try again later",
            code="storage_unavailable",
        ) from exc
    except NoCredentialsError as exc:
        raise StorageError(
            f"file storage credentials are not configured, could not {action}"
        ) from exc
    except ClientError as exc:
        error = exc.response.get("Error", {})
        log.warning("s3_error", action=action, key=key, code=error.get("Code"))
        raise StorageError(
            f"file storage refused to {action}{where}: {error.get('Code', 'error')}"
        ) from exc
    except BotoCoreError as exc:
        log.warning("s3_failure", action=action, key=key, error=str(exc))
        raise StorageError(f"file storage failed to {action}{where}") from exc


def upload_file(
    file_obj: IO[bytes] | bytes, object_name: str, *, content_type: str
) -> UploadResult:
    """Store the bytes of `file_obj` under `object_name` (private) and return their size and hash."""
    data = file_obj if isinstance(file_obj, bytes) else file_obj.read()
    digest = hashlib.sha256(data).hexdigest()
    bucket = bucket_name()
    with _storage_errors("store the file", object_name):
        response = get_client().put_object(
            Bucket=bucket,
            Key=object_name,
            Body=data,
            ContentType=content_type,
            # Browsers save receipts instead of rendering them in the bucket's origin.
            ContentDisposition="attachment",
            Metadata={"sha256": digest},
        )
    return UploadResult(
        bucket=bucket,
        key=object_name,
        size=len(data),
        sha256=digest,
        content_type=content_type,
        etag=response.get("ETag"),
    )


def presigned_url(
    object_name: str,
    *,
    expires_seconds: int = DEFAULT_URL_TTL_SECONDS,
    content_type: str | None = None,
) -> str:
    """A URL that lets its holder GET the object for `expires_seconds` (signed locally, no call).

    The answer is always a download (`Content-Disposition: attachment`), with `content_type` when
    given, whatever the object's stored metadata says."""
    ttl = max(1, min(int(expires_seconds), MAX_URL_TTL_SECONDS))
    params = {
        "Bucket": bucket_name(),
        "Key": object_name,
        "ResponseContentDisposition": f'attachment; filename="{object_name.rsplit("/", 1)[-1]}"',
    }
    if content_type:
        params["ResponseContentType"] = content_type
    with _storage_errors("sign a download URL", object_name):
        url: str = get_client().generate_presigned_url("get_object", Params=params, ExpiresIn=ttl)
    return url


def delete_file(object_name: str) -> None:
    """Delete the object (deleting a missing object succeeds, as S3 does)."""
    with _storage_errors("delete the file", object_name):
        get_client().delete_object(Bucket=bucket_name(), Key=object_name)


def object_exists(object_name: str) -> bool:
    """Whether the object is stored (HEAD); used by cleanup checks and tests."""
    try:
        with _storage_errors("look up the file", object_name):
            get_client().head_object(Bucket=bucket_name(), Key=object_name)
    except StorageError as exc:
        cause = exc.__cause__
        if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in (
            "404",
            "NoSuchKey",
            "NotFound",
        ):
            return False
        raise
    return True


def ensure_bucket() -> None:
    """Create the configured bucket unless it exists (the embedded moto server forgets it)."""
    client = get_client()
    bucket = bucket_name()
    with _storage_errors("create the bucket"):
        try:
            client.head_bucket(Bucket=bucket)
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
        region = get_settings().S3_REGION
        params: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":  # us-east-1 refuses an explicit location constraint
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        client.create_bucket(**params)
