"""Artifact storage in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, R2), through boto3, so that
the API and workers on different hosts share no disk.

- A file is one object; a folder (an extracted model) is one object per file, then a manifest
  written last: a folder exists only once its manifest does, so a reader never sees half of one.
- Uploads go through boto3's managed transfer, which splits large files into a multipart upload with
  bounded memory and aborts it when a part fails; a folder whose upload fails is deleted again.
- Workers read stored models and datasets through a local cache keyed by each object's sha256 of
  key and ETag, least recently used first out when it passes its size limit.
- Scratch space (uploads being received, a job's working folder) stays on the local disk.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from app.core.storage import scratch_folder, sweep_folder

logger = logging.getLogger(__name__)

MANIFEST = ".compresso-folder.json"
CHUNK_BYTES = 1024 * 1024
# Multipart transfers: parts of at least 8 MiB, four at a time, so a transfer holds about 32 MiB of
# buffers whatever the file's size (boto3's default, 10 at a time, would hold 80 MiB); parts grow for
# files so large that 9,000 parts would not hold them (S3 allows 10,000).
PART_BYTES = 8 * 1024 * 1024
MAX_PARTS = 9000
TRANSFER_THREADS = 4
_URL = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")


class StorageConfigError(ValueError):
    """COMPRESSO_STORAGE_URL or its bucket is unusable; the message says what to fix."""


def parse_url(url: str) -> tuple[str, str]:
    match = _URL.match(url.strip())
    if match is None:
        raise StorageConfigError(f"COMPRESSO_STORAGE_URL must look like s3://bucket or s3://bucket/prefix, not {url!r}")
    return match["bucket"], (match["prefix"] or "").strip("/")


def transfer_config(size_bytes: int):  # noqa: ANN201 - boto3.s3.transfer.TransferConfig
    from boto3.s3.transfer import TransferConfig

    part = max(PART_BYTES, -(-size_bytes // MAX_PARTS))
    return TransferConfig(multipart_threshold=PART_BYTES, multipart_chunksize=part, max_concurrency=TRANSFER_THREADS)


def _check_key(key: str) -> str:
    parts = key.strip("/").split("/")
    if not key.strip("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"storage key escapes the storage root: {key!r}")
    return "/".join(parts)


class S3Storage:
    def __init__(self, url: str, local_root: Path, cache_bytes: int, endpoint_url: str | None = None,
                 presign_seconds: int | None = None, client=None):  # noqa: ANN001
        import boto3

        self.bucket, self.prefix = parse_url(url)
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url)
        self.presign_seconds = presign_seconds
        self.local_root = local_root.resolve()
        self.cache = LocalCache(self.local_root / "cache", cache_bytes)
        for folder in (".scratch", "work"):
            (self.local_root / folder).mkdir(parents=True, exist_ok=True)

    def check_bucket(self) -> None:
        """Fails with what to fix when the bucket cannot be reached (at API and worker start)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise StorageConfigError(
                f"the bucket {self.bucket!r} of COMPRESSO_STORAGE_URL cannot be used: {exc}. Create it, or check "
                "COMPRESSO_S3_ENDPOINT_URL and the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION variables."
            ) from exc

    def _object(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _head(self, name: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def _names_under(self, name: str) -> Iterator[dict]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=name.rstrip("/") + "/"):
            yield from page.get("Contents", [])

    def scratch(self) -> AbstractContextManager[Path]:
        return scratch_folder(self.local_root / ".scratch")

    def put(self, source: Path, key: str) -> None:
        """Uploads a file, or a folder then its manifest, and removes the local source (a move)."""
        name = self._object(key)
        if self.exists(key):
            self.delete(key)
        try:
            if source.is_dir():
                files = sorted(path for path in source.rglob("*") if path.is_file())
                manifest = []
                for path in files:
                    relative = path.relative_to(source).as_posix()
                    self.client.upload_file(str(path), self.bucket, f"{name}/{relative}",
                                            Config=transfer_config(path.stat().st_size))
                    manifest.append({"path": relative, "size": path.stat().st_size})
                self.client.put_object(Bucket=self.bucket, Key=f"{name}/{MANIFEST}",
                                       Body=json.dumps({"files": manifest}).encode())
            else:
                self.client.upload_file(str(source), self.bucket, name, Config=transfer_config(source.stat().st_size))
        except BaseException:
            self.delete(key)  # a folder's parts already sent; a failed multipart upload was aborted by boto3
            raise
        if source.is_dir():
            shutil.rmtree(source, ignore_errors=True)
        else:
            source.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        name = self._object(key)
        return self._head(name) is not None or self._head(f"{name}/{MANIFEST}") is not None

    def local_path(self, key: str) -> Path:
        """A local working folder for `key` (a job's attempt); never uploaded by itself."""
        return self.local_root / "work" / _check_key(key)

    def local_copy(self, key: str) -> Path:
        """A local, read-only copy of a stored file or folder, from the cache when it is there."""
        name = self._object(key)
        head = self._head(name)
        folder = head is None
        if folder:
            head = self._head(f"{name}/{MANIFEST}")
            if head is None:
                raise FileNotFoundError(f"no stored object {key!r}")
        cache_key = hashlib.sha256(f"{name}\0{head['ETag']}".encode()).hexdigest()
        return self.cache.get(cache_key, lambda target: self._download(name, folder, target))

    def _download(self, name: str, folder: bool, target: Path) -> None:
        if not folder:
            size = self._head(name)["ContentLength"]
            self.client.download_file(self.bucket, name, str(target), Config=transfer_config(size))
            return
        body = self.client.get_object(Bucket=self.bucket, Key=f"{name}/{MANIFEST}")["Body"].read()
        target.mkdir(parents=True)
        for entry in json.loads(body)["files"]:
            path = target / _check_key(entry["path"])
            path.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(self.bucket, f"{name}/{entry['path']}", str(path),
                                      Config=transfer_config(entry["size"]))

    def open_chunks(self, key: str) -> Iterator[bytes]:
        body = self.client.get_object(Bucket=self.bucket, Key=self._object(key))["Body"]
        try:
            yield from body.iter_chunks(CHUNK_BYTES)
        finally:
            body.close()

    def presigned_url(self, key: str, filename: str) -> str | None:
        """A time-limited GET URL the client can download from directly; None when presigning is off."""
        if self.presign_seconds is None:
            return None
        return self.client.generate_presigned_url(
            "get_object", ExpiresIn=self.presign_seconds,
            Params={"Bucket": self.bucket, "Key": self._object(key),
                    "ResponseContentDisposition": f'attachment; filename="{filename}"'},
        )

    def delete(self, key: str) -> None:
        name = self._object(key)
        names = [name] + [item["Key"] for item in self._names_under(name)]
        for start in range(0, len(names), 1000):
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": n} for n in names[start:start + 1000]], "Quiet": True}
            )
        shutil.rmtree(self.local_path(key), ignore_errors=True)

    def children(self, prefix: str) -> list[tuple[str, float]]:
        """Keys directly under `prefix` in the bucket, with the newest write time of anything under each."""
        prefix = _check_key(prefix)
        newest: dict[str, float] = {}
        base = self._object(prefix)
        for item in self._names_under(base):
            child = item["Key"][len(base) + 1:].split("/", 1)[0]
            stamp = item["LastModified"].timestamp()
            newest[child] = max(newest.get(child, 0.0), stamp)
        return [(f"{prefix}/{child}", stamp) for child, stamp in sorted(newest.items())]

    def sweep_scratch(self, idle_seconds: float) -> list[str]:
        return sweep_folder(self.local_root / ".scratch", idle_seconds)


class LocalCache:
    """Downloaded objects by key, at most `limit_bytes` in all: the least recently used go first. An
    entry is written under a temporary name and renamed into place, so a crash leaves no half entry."""

    def __init__(self, root: Path, limit_bytes: int):
        self.root = root
        self.limit_bytes = limit_bytes
        root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _size(path: Path) -> int:
        if path.is_dir():
            return sum(child.stat().st_size for child in path.rglob("*") if child.is_file())
        return path.stat().st_size

    def get(self, key: str, fetch) -> Path:  # noqa: ANN001 - fetch(target: Path) writes the entry
        entry = self.root / key
        if entry.exists():
            os.utime(entry)  # most recently used
            return entry
        partial = self.root / f".{key}.{uuid.uuid4().hex}.partial"
        try:
            fetch(partial)
            os.replace(partial, entry)
        except OSError:
            if not entry.exists():
                raise
            # Another process or thread put the same entry first: use theirs.
        finally:
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
        os.utime(entry)
        self.evict(keep=entry)
        return entry

    def evict(self, keep: Path | None = None) -> list[str]:
        entries = [path for path in self.root.iterdir() if not path.name.startswith(".")]
        entries.sort(key=lambda path: path.stat().st_mtime)
        total = sum(self._size(path) for path in entries)
        removed = []
        for path in entries:
            if total <= self.limit_bytes:
                break
            if path == keep:
                continue
            total -= self._size(path)
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path.name)
        return removed
