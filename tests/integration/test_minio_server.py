"""The real MinIO fixture works end to end through the ``minio`` client and HTTP."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import uuid

import httpx
import pytest
from minio.error import S3Error

from support.minio_server import MinioServer

pytestmark = pytest.mark.minio


def test_put_stat_get_presign(minio_server: MinioServer) -> None:
    client = minio_server.client()
    bucket = f"smoke-{uuid.uuid4().hex[:12]}"
    client.make_bucket(bucket)
    payload = os.urandom(256 * 1024 + 17)
    client.put_object(bucket, "dir/blob.bin", io.BytesIO(payload), len(payload))

    stat = client.stat_object(bucket, "dir/blob.bin")
    assert stat.size == len(payload)

    response = client.get_object(bucket, "dir/blob.bin")
    try:
        assert response.read() == payload
    finally:
        response.close()
        response.release_conn()

    url = client.presigned_get_object(bucket, "dir/blob.bin", expires=dt.timedelta(minutes=5))
    fetched = httpx.get(url, timeout=10)
    assert fetched.status_code == 200
    assert hashlib.sha256(fetched.content).digest() == hashlib.sha256(payload).digest()

    # A URL whose signature was tampered with is refused by the server itself.
    tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert httpx.get(tampered, timeout=10).status_code == 403

    client.remove_object(bucket, "dir/blob.bin")
    with pytest.raises(S3Error) as missing:
        client.stat_object(bucket, "dir/blob.bin")
    assert missing.value.code == "NoSuchKey"
