"""Local files on the client's side: model folders zipped for upload, recipe documents read, and
byte counts reported while a file is sent."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import yaml

ByteProgress = Callable[[int, int], None]

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")
# Weights are close to incompressible: deflating them costs minutes on a large model for a few percent.
_STORED_SUFFIXES = {".safetensors", ".onnx", ".bin", ".gguf"}


def archive_name(path: Path) -> str:
    """The upload's default name: the folder's or the archive's, without the archive suffix."""
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def zip_folder(folder: Path, dest: Path) -> Path:
    """Zips `folder`'s files at the archive's root, as `cd folder && zip -r` does. Entries whose path has
    a part starting with "." (a `.git` of a cloned hub repository, caches) are left out; symlinks (a hub
    cache snapshot is made of them) are followed, because the server refuses links in an archive."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            stored = path.suffix.lower() in _STORED_SUFFIXES
            archive.write(path, relative.as_posix(), compress_type=zipfile.ZIP_STORED if stored else None)
    return dest


def load_document(source: dict[str, Any] | str | os.PathLike[str], what: str) -> dict[str, Any]:
    """A mapping given as is, or read from a .yaml/.yml/.json file."""
    if isinstance(source, dict):
        return source
    path = Path(source)
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ValueError(f"The {what} file must be .yaml, .yml or .json, not {path.name!r}.")
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"The {what} file {path} is not valid {path.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"The {what} file {path} must hold a mapping, e.g. {{steps: [...]}}.")
    return document


class ProgressReader:
    """A binary file that calls `on_progress(bytes_read, total)` as it is read; a seek back to the start
    (httpx rewinds a file for each attempt of a request) starts the count again."""

    def __init__(self, handle: IO[bytes], total: int, on_progress: ByteProgress):
        self._handle = handle
        self._total = total
        self._on_progress = on_progress
        self._done = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        if chunk:
            self._done += len(chunk)
            self._on_progress(self._done, self._total)
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._handle.seek(offset, whence)
        self._done = position
        return position

    def tell(self) -> int:
        return self._handle.tell()

    def fileno(self) -> int:  # lets httpx take the file's size for Content-Length
        return self._handle.fileno()
