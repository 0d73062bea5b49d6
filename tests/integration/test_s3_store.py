"""The S3 artifact store (`firmware.stores.S3Store`, botocore) against an S3-compatible server run
here as a process (moto's server, on a free loopback port): multipart upload in parts, presigned
GET with Range, a failed upload leaving nothing. What this cannot show: a store refusing an expired
or altered presigned URL (moto's server checks neither the signature nor the expiry) and scoped
STS credentials."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import httpx
import pytest

from services.devtools.processes import ManagedProcess, free_port, wait_for_http
from services.domain.errors import TwinError
from services.domain.software.artifacts import Artifact
from services.domain.software.ranges import ByteRange
from services.firmware.stores import S3Store, blob_name

BUCKET = "artifacts"
MIB = 1 << 20


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if server is None:
        pytest.fail("moto_server not installed: run `make setup`")
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    process = ManagedProcess("moto", [server, "-H", "127.0.0.1", "-p", str(port)], log)
    process.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_for_http(f"{endpoint}/moto-api/", 30, process.process)
        boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
        ).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        process.stop()


def artifact(artifact_id: str) -> Artifact:
    return Artifact(id=artifact_id, name="fw", version="1.0.0", created=0.0)


async def pieces(data: bytes, size: int = 300_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_multipart_upload_and_presigned_range_download(s3_endpoint: str) -> None:
    store = S3Store(s3_endpoint, "us-east-1", BUCKET, "k", "s", part_size=1, in_flight=3)  # 5 MiB parts
    await store.open()
    data = os.urandom(12 * MIB + 4321)
    written = await store.write(artifact("fw-1.0.0"), pieces(data), limit=64 * MIB)
    assert (written.length, written.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    url = await store.url(artifact("fw-1.0.0"), datetime.now(UTC) + timedelta(minutes=5), None)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=" in url
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.get(url)).content == data
        part = await client.get(url, headers={"Range": f"bytes={5 * MIB - 3}-{5 * MIB + 2}"})
        assert part.status_code == 206 and part.content == data[5 * MIB - 3 : 5 * MIB + 3]
    proxied = b"".join([chunk async for chunk in store.read(artifact("fw-1.0.0"), ByteRange(10, 19))])
    assert proxied == data[10:20]
    with pytest.raises(TwinError):
        await store.url(artifact("fw-1.0.0"), datetime.now(UTC) + timedelta(minutes=5), "10.0.0.1")
    await store.delete(artifact("fw-1.0.0"))
    await store.close()


async def test_a_refused_upload_leaves_no_object(s3_endpoint: str) -> None:
    store = S3Store(s3_endpoint, "us-east-1", BUCKET, "k", "s", part_size=1, in_flight=2)
    with pytest.raises(TwinError):
        await store.write(artifact("big-1.0"), pieces(os.urandom(11 * MIB)), limit=10 * MIB)
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    listed = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    assert blob_name("big-1.0") not in [o["Key"] for o in listed]
    assert client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
