"""Artifact storage interface and its default, a local (or network-mounted) directory.

Every write is staged under a scratch directory on the same filesystem and renamed into place,
so a reader never sees a half-written file and a failure leaves nothing behind.
"""

import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Protocol

CHUNK_BYTES = 1024 * 1024


class Storage(Protocol):
    """What the API and the workers need from artifact storage: LocalStorage (a directory, the embedded
    default) or app.core.object_storage.S3Storage (a bucket, when scaled out)."""

    def scratch(self) -> AbstractContextManager[Path]: ...

    def put(self, source: Path, key: str) -> None: ...

    def local_path(self, key: str) -> Path:
        """A local folder for work at `key` (a job's attempt). On a shared directory it is the stored
        place itself; with an object store it is local and never uploaded by itself."""
        ...

    def local_copy(self, key: str) -> Path:
        """A local path holding a stored file or folder, to read (a worker's copy of a model)."""
        ...

    def presigned_url(self, key: str, filename: str) -> str | None:
        """A URL a client may download `key` from directly, or None to stream it through the API."""
        ...

    def exists(self, key: str) -> bool: ...

    def open_chunks(self, key: str) -> Iterator[bytes]: ...

    def delete(self, key: str) -> None: ...

    def children(self, prefix: str) -> list[tuple[str, float]]:
        """The keys directly under `prefix`, each with the time it was last written to."""
        ...

    def sweep_scratch(self, idle_seconds: float) -> list[str]:
        """Removes scratch folders nothing has written to for `idle_seconds`; returns their names."""
        ...


def last_write(path: Path) -> float:
    """The newest modification time of a file, or of anything inside a folder."""
    times = [path.stat().st_mtime]
    if path.is_dir():
        times += [child.stat().st_mtime for child in path.rglob("*")]
    return max(times)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def scratch_folder(parent: Path) -> Iterator[Path]:
    """A private scratch directory under `parent`, removed on exit whatever happens."""
    path = parent / uuid.uuid4().hex
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep_folder(parent: Path, idle_seconds: float) -> list[str]:
    """Removes the entries of `parent` nothing has written to for `idle_seconds`; returns their names."""
    if not parent.is_dir():
        return []  # never made, or removed with the storage folder: nothing to sweep (scratch() makes it again)
    removed = []
    now = time.time()
    for entry in parent.iterdir():
        try:
            idle = now - last_write(entry)
        except FileNotFoundError:
            continue
        if idle < idle_seconds:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name)
    return removed


class LocalStorage:
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".scratch").mkdir(exist_ok=True)

    def _resolve(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return path

    def scratch(self) -> AbstractContextManager[Path]:
        return scratch_folder(self.root / ".scratch")

    def put(self, source: Path, key: str) -> None:
        """Moves a file or folder into place atomically (same filesystem: a rename)."""
        target = self._resolve(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            self.delete(key)
        os.replace(source, target)

    def local_path(self, key: str) -> Path:
        return self._resolve(key)

    def local_copy(self, key: str) -> Path:
        return self._resolve(key)

    def presigned_url(self, key: str, filename: str) -> str | None:
        return None

    def exists(self, key: str) -> bool:
        return self._resolve(key).exists()

    def open_chunks(self, key: str) -> Iterator[bytes]:
        with self._resolve(key).open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk

    def delete(self, key: str) -> None:
        path = self._resolve(key)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def children(self, prefix: str) -> list[tuple[str, float]]:
        folder = self._resolve(prefix)
        if not folder.is_dir():
            return []
        found = []
        for child in folder.iterdir():
            try:
                found.append((f"{prefix.rstrip('/')}/{child.name}", last_write(child)))
            except FileNotFoundError:
                continue  # removed while listing
        return found

    def sweep_scratch(self, idle_seconds: float) -> list[str]:
        return sweep_folder(self.root / ".scratch", idle_seconds)


@lru_cache
def get_storage(root: Path) -> Storage:
    return LocalStorage(root)


@lru_cache
def _object_storage(url: str, local_root: Path, cache_bytes: int, endpoint_url: str | None,
                    presign_seconds: int | None) -> Storage:
    from app.core.object_storage import S3Storage

    return S3Storage(url, local_root, cache_bytes, endpoint_url, presign_seconds)


def storage_for(settings) -> Storage:  # noqa: ANN001 - app.config.Settings (it imports this module's users)
    """The configured backend: a bucket when COMPRESSO_STORAGE_URL is set, else the storage directory."""
    if not settings.storage_url:
        return get_storage(settings.storage_dir)
    return _object_storage(
        settings.storage_url, settings.data_dir / "object-storage", settings.storage_cache_bytes,
        settings.s3_endpoint_url, settings.storage_presign_seconds if settings.storage_presign else None,
    )


def check_storage(settings) -> None:  # noqa: ANN001 - app.config.Settings
    """At API and worker start: a bucket that cannot be reached stops them with what to fix."""
    storage = storage_for(settings)
    check = getattr(storage, "check_bucket", None)
    if check is not None:
        check()
