"""The S3-compatible storage backend against a real S3 server process (moto's server mode): files and
folders in and out, nothing left by a failed upload, the local cache, listing, presigned downloads."""

import os
import time
from pathlib import Path

import httpx
import pytest

from app.core.object_storage import MANIFEST, LocalCache, S3Storage, StorageConfigError, parse_url
from tests.integration.harness import free_port
from tests.s3_server import AWS_ENV, s3_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with s3_server(free_port(), tmp_path_factory.mktemp("moto") / "moto.log") as running:
        yield running


@pytest.fixture
def storage(server, tmp_path, monkeypatch):
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    bucket = f"b{time.time_ns()}"
    server.client().create_bucket(Bucket=bucket)
    backend = S3Storage(f"s3://{bucket}/compresso", tmp_path / "local", cache_bytes=10**9,
                        endpoint_url=server.endpoint_url, presign_seconds=600)
    backend.check_bucket()
    return backend


def test_urls_name_a_bucket_and_an_optional_prefix():
    assert parse_url("s3://my-bucket") == ("my-bucket", "")
    assert parse_url("s3://my-bucket/a/b/") == ("my-bucket", "a/b")
    with pytest.raises(StorageConfigError, match="s3://bucket"):
        parse_url("https://my-bucket")


def test_a_missing_bucket_says_what_to_fix(server, tmp_path, monkeypatch):
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    backend = S3Storage("s3://no-such-bucket", tmp_path, 10**6, endpoint_url=server.endpoint_url)
    with pytest.raises(StorageConfigError, match="no-such-bucket.*Create it"):
        backend.check_bucket()


def test_a_file_goes_in_comes_out_and_is_deleted(storage, server, tmp_path):
    source = tmp_path / "report.json"
    payload = os.urandom(3 * 1024 * 1024 + 17)
    source.write_bytes(payload)
    storage.put(source, "jobs/j1/report.json")
    assert not source.exists()  # a move, as on a local directory
    assert storage.exists("jobs/j1/report.json")
    assert server.keys(storage.bucket) == ["compresso/jobs/j1/report.json"]
    assert b"".join(storage.open_chunks("jobs/j1/report.json")) == payload
    assert storage.local_copy("jobs/j1/report.json").read_bytes() == payload
    url = storage.presigned_url("jobs/j1/report.json", "report.json")
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == payload
    assert 'filename="report.json"' in response.headers["content-disposition"]
    storage.delete("jobs/j1/report.json")
    assert not storage.exists("jobs/j1/report.json") and server.keys(storage.bucket) == []


def test_a_folder_exists_once_its_manifest_is_written_and_copies_back_whole(storage, server, tmp_path):
    folder = tmp_path / "model"
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "tokenizer" / "vocab.txt").write_text("hello\nworld\n")
    storage.put(folder, "models/m1")
    keys = server.keys(storage.bucket)
    assert keys == ["compresso/models/m1/.compresso-folder.json", "compresso/models/m1/config.json",
                    "compresso/models/m1/tokenizer/vocab.txt"]
    assert storage.exists("models/m1")
    copy = storage.local_copy("models/m1")
    assert (copy / "config.json").read_text() == '{"a": 1}'
    assert (copy / "tokenizer" / "vocab.txt").read_text() == "hello\nworld\n"
    assert storage.local_copy("models/m1") == copy  # the cache serves it again
    server.client().delete_object(Bucket=storage.bucket, Key=f"compresso/models/m1/{MANIFEST}")
    assert not storage.exists("models/m1")  # parts without their manifest are no folder
    [(key, written)] = storage.children("models")
    assert key == "models/m1" and written <= time.time() + 5
    storage.delete("models/m1")
    assert server.keys(storage.bucket) == []


def _unreadable_file(tmp_path: Path) -> Path | None:
    """A file that cannot be read: mode 000 for an ordinary user; for root (who reads anything), a
    write-only sysfs attribute, which refuses reads whoever asks."""
    if os.geteuid() != 0:
        path = tmp_path / "unreadable"
        path.write_bytes(b"x" * 4096)
        path.chmod(0)
        return path
    candidates = [Path("/sys/bus/pci/rescan"), *Path("/sys/devices").glob("pci*/*/rescan"),
                  *Path("/sys/kernel/mm/hugepages").glob("*/demote")]
    for path in candidates:
        try:
            path.open("rb").close()
        except PermissionError:
            return path
        except OSError:
            continue
    return None


def test_a_failed_folder_upload_leaves_nothing_in_the_bucket(storage, server, tmp_path):
    unreadable = _unreadable_file(tmp_path)
    if unreadable is None:
        pytest.skip("no file here refuses to be read (root, and no write-only sysfs attribute)")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "a.json").write_text("{}")
    (folder / "b.bin").symlink_to(unreadable)  # sent after a.json: the upload fails half-way
    with pytest.raises(OSError):
        storage.put(folder, "models/broken")
    assert server.keys(storage.bucket) == []
    assert server.client().list_multipart_uploads(Bucket=storage.bucket).get("Uploads", []) == []
    assert not storage.exists("models/broken")


def test_the_cache_keeps_the_most_recently_used_within_its_limit(tmp_path):
    cache = LocalCache(tmp_path / "cache", limit_bytes=250)
    fetched = []

    def fetch(size: int):  # noqa: ANN202
        def write(target):  # noqa: ANN001, ANN202
            fetched.append(size)
            target.write_bytes(b"x" * size)
        return write

    first = cache.get("first", fetch(100))
    cache.get("second", fetch(100))
    os.utime(first, (time.time() + 10, time.time() + 10))  # used after "second"
    cache.get("first", fetch(100))
    assert fetched == [100, 100]  # the second get of "first" downloaded nothing
    cache.get("third", fetch(100))  # 300 bytes > 250: the least recently used ("second") goes
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == ["first", "third"]


def test_multipart_parts_stay_small_and_few_enough():
    from app.core.object_storage import MAX_PARTS, PART_BYTES, transfer_config

    small = transfer_config(16 * 1024**3)  # 16 GiB: 2,048 parts of 8 MiB, four in flight
    assert small.multipart_chunksize == PART_BYTES and small.max_concurrency * PART_BYTES <= 64 * 1024**2
    huge = transfer_config(200 * 1024**3)  # parts grow so that the object fits S3's 10,000-part limit
    assert huge.multipart_chunksize * MAX_PARTS >= 200 * 1024**3 > PART_BYTES * MAX_PARTS


def test_the_startup_sweep_removes_orphans_from_the_bucket_and_keeps_rows(storage, server, tmp_path, database):
    from sqlalchemy import text

    from app.db.session import session_scope
    from app.maintenance.sweep import sweep_orphans
    from tests.rows import add_model_row

    for name in ("kept", "orphan"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        storage.put(folder, f"models/{name}")
    model_id = add_model_row(storage_key="models/kept")
    attempt = storage.local_path("jobs/gone-job/attempt-1")  # a worker's folder for a job that is not running
    attempt.mkdir(parents=True)
    try:
        with session_scope() as session:
            result = sweep_orphans(session, storage, idle_seconds=0)
    finally:
        with session_scope() as session:
            session.execute(text("DELETE FROM models WHERE id = :id"), {"id": model_id})
    assert sorted(result.keys) == ["jobs/gone-job/attempt-1", "models/orphan"]
    assert storage.exists("models/kept") and not storage.exists("models/orphan") and not attempt.exists()
