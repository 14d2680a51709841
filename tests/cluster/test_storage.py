"""orchestration.storage against a real S3-compatible server (SeaweedFS)."""

from __future__ import annotations

import pytest

from orchestration.storage import (Storage, StorageError, check_metadata, open_storage, overlaps, parse_url,
                                   validate_key)
from orchestration.settings import load_settings

pytestmark = pytest.mark.cluster


@pytest.fixture
def storage(s3_server) -> Storage:
    settings = load_settings(s3_endpoint_url=s3_server.url, s3_access_key_id=s3_server.access_key,
                             s3_secret_access_key=s3_server.secret_key, multipart_threshold_mb=5)
    return Storage.from_settings(settings)


@pytest.mark.parametrize("key, cause", [
    ("a/../b.jpg", "'..'"), ("./a.jpg", "'.'"), ("a/\x00b.jpg", "control"), ("a/b\n.jpg", "control"),
    ("/abs.jpg", "starts with"), ("x" * 1025, "longer than 1024"), ("", "empty"),
])
def test_bad_keys_are_refused_naming_the_cause(key, cause):
    with pytest.raises(StorageError, match=cause):
        validate_key(key)


def test_urls_and_overlap():
    assert parse_url("s3://archive/raw/2024/") == parse_url("s3://archive/raw/2024")
    assert overlaps(parse_url("s3://a-b/raw"), parse_url("s3://a-b/raw/out"))
    assert overlaps(parse_url("s3://a-b/raw/x"), parse_url("s3://a-b/raw"))
    assert overlaps(parse_url("s3://a-b"), parse_url("s3://a-b/out"))
    assert not overlaps(parse_url("s3://a-b/raw"), parse_url("s3://a-b/raw2"))
    assert not overlaps(parse_url("s3://a-b/raw"), parse_url("s3://c-d/raw"))
    for bad in ("http://x/y", "s3://UPPER/x", "s3://ab/x", "s3://bucket/a/../b"):
        with pytest.raises(StorageError):
            parse_url(bad)


def test_metadata_limit():
    check_metadata({"retouch-fingerprint": "0123456789abcdef", "retouch-models": "detect=x;inpaint=telea"})
    with pytest.raises(StorageError, match="2048"):
        check_metadata({"k": "v" * 2100})
    with pytest.raises(StorageError, match="ASCII"):
        check_metadata({"k": "é"})


def test_conditional_writes_never_overwrite(storage, bucket, s3):
    assert storage.put(bucket, "o/a.bin", b"first", {"retouch-fingerprint": "1"}) is True
    assert storage.put(bucket, "o/a.bin", b"second", {"retouch-fingerprint": "2"}) is False  # redelivery
    assert s3.get_object(Bucket=bucket, Key="o/a.bin")["Body"].read() == b"first"
    assert storage.head(bucket, "o/a.bin")["retouch-fingerprint"] == "1"
    assert storage.head(bucket, "o/missing.bin") is None
    # multipart (above the 5 MiB threshold) is conditional too
    big = bytes(range(256)) * (6 * 2**20 // 256 + 1)
    assert storage.put(bucket, "o/big.bin", big, {"retouch-fingerprint": "3"}) is True
    assert s3.head_object(Bucket=bucket, Key="o/big.bin")["ETag"].strip('"').endswith("-2")  # two parts
    assert storage.put(bucket, "o/big.bin", big[::-1]) is False
    assert s3.get_object(Bucket=bucket, Key="o/big.bin")["Body"].read() == big
    # an explicit overwrite (--force on outputs) replaces
    assert storage.put(bucket, "o/a.bin", b"third", overwrite=True) is True
    assert s3.get_object(Bucket=bucket, Key="o/a.bin")["Body"].read() == b"third"


def test_listing_is_paginated(storage, bucket, s3):
    for i in range(25):
        s3.put_object(Bucket=bucket, Key=f"p/{i:03d}.jpg", Body=b"x")
    s3.put_object(Bucket=bucket, Key="p2/other.jpg", Body=b"x")
    keys = [o["Key"] for o in storage.list_objects(f"s3://{bucket}/p", page_size=10)]
    assert keys == [f"p/{i:03d}.jpg" for i in range(25)]


def test_eval_reads_s3_datasets_through_open_storage(s3_server, bucket, s3, monkeypatch, archive_photos):
    from orchestration.evaluate.dataset import load_photos

    photos = archive_photos(3, seed=5)
    for name, data in photos.items():
        s3.put_object(Bucket=bucket, Key=f"clean/{name}", Body=data)
    s3.put_object(Bucket=bucket, Key="clean/readme.txt", Body=b"not a photo")
    monkeypatch.setenv("RETOUCH_S3_ENDPOINT_URL", s3_server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    reader = open_storage(f"s3://{bucket}/clean")
    assert sorted(reader.list(f"s3://{bucket}/clean")) == sorted([f"clean/{n}" for n in photos] + ["clean/readme.txt"])
    loaded = load_photos(f"s3://{bucket}/clean", max_side=128)
    assert sorted(p.name for p in loaded) == sorted(f"clean/{n}" for n in photos)
    assert all(p.rgb.shape == (128, 128, 3) for p in loaded)


def test_wrong_credentials_fail_without_leaking_them(s3_server, bucket):
    from botocore.exceptions import ClientError

    secret = "definitely-not-the-secret-" + "x" * 8
    settings = load_settings(s3_endpoint_url=s3_server.url, s3_access_key_id="nobody",
                             s3_secret_access_key=secret, s3_max_attempts=1)
    assert secret not in repr(settings) and secret not in str(settings)
    with pytest.raises(ClientError) as err:
        Storage.from_settings(settings).get(bucket, "any.jpg")
    assert secret not in str(err.value)
