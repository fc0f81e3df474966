"""The S3 client against a real S3-compatible server (moto's, started by the `s3_endpoint` fixture)."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from jivapay.config import get_settings, reset_settings_cache
from jivapay.embedded import free_port
from jivapay.utils import s3_client
from jivapay.utils.exceptions import ServiceUnavailable, StorageError

PDF = b"%PDF-1.4\n" + os.urandom(2048)


@contextmanager
def storage_env(**values: str) -> Iterator[None]:
    """Point the S3 settings elsewhere for a block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    reset_settings_cache()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reset_settings_cache()


def _key() -> str:
    return f"receipts/ord_test/{uuid.uuid4()}.pdf"


def test_upload_then_download_through_presigned_url(s3_endpoint: str) -> None:
    key = _key()
    result = s3_client.upload_file(PDF, key, content_type="application/pdf")
    assert result.key == key and result.size == len(PDF)
    assert result.sha256 == hashlib.sha256(PDF).hexdigest()
    assert result.bucket == get_settings().S3_BUCKET_NAME

    url = s3_client.presigned_url(key)
    assert url.startswith(s3_endpoint)
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == PDF
    assert hashlib.sha256(response.content).hexdigest() == result.sha256
    assert response.headers["content-type"] == "application/pdf"


def test_objects_are_private_and_urls_are_signed_and_short_lived(s3_endpoint: str) -> None:
    key = _key()
    s3_client.upload_file(PDF, key, content_type="application/pdf")

    # Moto enforces the object ACL for anonymous requests: without a signature, no read.
    anonymous = httpx.get(f"{s3_endpoint}/{get_settings().S3_BUCKET_NAME}/{key}")
    assert anonymous.status_code == 403
    assert PDF not in anonymous.content

    grants = s3_client.get_client().get_object_acl(Bucket=get_settings().S3_BUCKET_NAME, Key=key)[
        "Grants"
    ]
    public = [g for g in grants if g["Grantee"].get("Type") == "Group"]
    assert public == [] and [g["Permission"] for g in grants] == ["FULL_CONTROL"]

    query = parse_qs(urlparse(s3_client.presigned_url(key)).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert len(query["X-Amz-Signature"][0]) == 64
    assert query["X-Amz-Expires"] == ["300"]
    capped = parse_qs(urlparse(s3_client.presigned_url(key, expires_seconds=10**6)).query)
    assert capped["X-Amz-Expires"] == [str(s3_client.MAX_URL_TTL_SECONDS)]


def test_delete_and_exists(s3_endpoint: str) -> None:
    key = _key()
    assert s3_client.object_exists(key) is False
    s3_client.upload_file(PDF, key, content_type="application/pdf")
    assert s3_client.object_exists(key) is True
    s3_client.delete_file(key)
    assert s3_client.object_exists(key) is False
    s3_client.delete_file(key)  # deleting again is not an error, as on S3


def test_ensure_bucket_creates_a_missing_bucket_once(s3_endpoint: str) -> None:
    bucket = f"jivapay-extra-{uuid.uuid4().hex[:8]}"
    with storage_env(S3_BUCKET_NAME=bucket):
        with pytest.raises(StorageError) as missing:
            s3_client.upload_file(PDF, _key(), content_type="application/pdf")
        assert missing.value.status_code == 502 and "NoSuchBucket" in missing.value.message
        s3_client.ensure_bucket()
        s3_client.ensure_bucket()  # idempotent
        names = {b["Name"] for b in s3_client.get_client().list_buckets()["Buckets"]}
        assert bucket in names
        s3_client.upload_file(PDF, _key(), content_type="application/pdf")


def test_dead_endpoint_fails_fast_with_503(s3_endpoint: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with storage_env(S3_ENDPOINT_URL=dead):
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as err:
            s3_client.upload_file(PDF, _key(), content_type="application/pdf")
        assert time.monotonic() - started < 10
        assert err.value.status_code == 503 and err.value.code == "storage_unavailable"
        assert "unreachable" in err.value.message
        with pytest.raises(ServiceUnavailable):
            s3_client.delete_file(_key())
        # Signing needs no network: a URL can still be made.
        assert s3_client.presigned_url(_key()).startswith(dead)
