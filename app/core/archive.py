"""Safe extraction of uploaded .zip and .tar.gz archives: regular files and folders only, within limits.

Sizes are counted on the bytes actually decompressed, never taken from the archive's own headers.
"""

import errno
import gzip
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from app.core.errors import Invalid, PayloadTooLarge

EXTRACTED_LIMIT_SETTING = "COMPRESSO_LIMITS__EXTRACTED_MAX_BYTES"
FILES_LIMIT_SETTING = "COMPRESSO_LIMITS__ARCHIVE_MAX_FILES"

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or the end record of an empty zip
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK_BYTES = 1024 * 1024
# zipfile loads the whole central directory (several times its size in memory) before any entry can be
# counted, so its size is bounded first: no real archive needs this much index per entry.
_ZIP_INDEX_BYTES_PER_ENTRY = 4096
# tarfile reads pax and GNU long-name headers whole into memory; real ones are a few hundred bytes.
_TAR_META_MAX_BYTES = 1024 * 1024
_TAR_META_TYPES = {
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
}
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
# Finder and macOS archivers add these beside the real content; refusing them would only confuse users.
_JUNK_FOLDERS = {"__MACOSX"}
_JUNK_FILES = {".DS_Store"}
# Errors the decompressors raise on damaged input. OSError as a whole is left out: it also means a full disk.
_CORRUPT_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    gzip.BadGzipFile,
    zlib.error,
    EOFError,
    NotImplementedError,  # a zip compression method Python cannot read
)

# Opens the member's decompressed stream; None for a folder.
_Opener = Callable[[], IO[bytes]] | None


def extract_archive(archive_path: Path, dest_dir: Path, *, max_extracted_bytes: int, max_files: int) -> Path:
    """Extract `archive_path` into `dest_dir` and return the model's root folder.

    The root is the single top-level folder when everything sits in one (a zipped folder), else `dest_dir`.
    `dest_dir` must not exist or be empty; it is filled only when the whole archive is accepted, and on any
    refusal it does not exist afterwards. Blocking: call it from a worker or `anyio.to_thread`.
    """
    if dest_dir.exists():
        if any(dest_dir.iterdir()):
            raise ValueError(f"{dest_dir} is not empty")
        dest_dir.rmdir()
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    # A sibling staging folder, renamed into place at the end, so a refusal half-way leaves nothing behind.
    staging = Path(tempfile.mkdtemp(dir=dest_dir.parent, prefix=f".{dest_dir.name}.extracting-"))
    try:
        _Extraction(staging, max_extracted_bytes, max_files).run(archive_path)
        os.rename(staging, dest_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    top_level = list(dest_dir.iterdir())
    if len(top_level) == 1 and top_level[0].is_dir():
        return top_level[0]
    return dest_dir


class _Extraction:
    """One pass over an archive's members, writing each accepted one under `root` and keeping the counts."""

    def __init__(self, root: Path, max_bytes: int, max_files: int):
        self.root = root
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.entries = 0
        self.written_bytes = 0
        self.written_files = 0

    def run(self, archive_path: Path) -> None:
        with archive_path.open("rb") as f:
            magic = f.read(4)
        try:
            if magic.startswith(_ZIP_MAGICS):
                members = _zip_members(archive_path, self.max_files)
            elif magic.startswith(_GZIP_MAGIC):
                members = _tar_members(archive_path)
            else:
                raise Invalid("The file is neither a .zip nor a .tar.gz archive.")
            with members as entries:
                for name, opener in entries:
                    self._add(name, opener)
        except _CORRUPT_ERRORS as exc:
            raise Invalid(f"The archive is damaged or in an unsupported format ({exc}); create it again.") from None
        if self.written_files == 0:
            raise Invalid("The archive holds no files.")

    def _add(self, raw_name: str, opener: _Opener) -> None:
        self.entries += 1
        if self.entries > self.max_files:
            raise _too_many_files(self.max_files)
        parts = _safe_parts(raw_name)
        if not parts or _is_junk(parts):
            return
        target = self.root.joinpath(*parts)
        try:
            if opener is None:
                target.mkdir(parents=True, exist_ok=True)
                return
            target.parent.mkdir(parents=True, exist_ok=True)
            # "xb": a name that appears twice is refused instead of silently keeping the last copy.
            with opener() as src, target.open("xb") as out:
                self._copy(raw_name, src, out)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG):
                raise Invalid(f"The archive entry '{raw_name}' cannot be written: {exc.strerror}.") from None
            raise
        self.written_files += 1

    def _copy(self, raw_name: str, src: IO[bytes], out: IO[bytes]) -> None:
        while chunk := src.read(_CHUNK_BYTES):
            self.written_bytes += len(chunk)
            if self.written_bytes > self.max_bytes:
                raise PayloadTooLarge(
                    f"The archive expands to more than {self.max_bytes} bytes (stopped at '{raw_name}'). "
                    f"The server's {EXTRACTED_LIMIT_SETTING} setting sets this limit."
                )
            out.write(chunk)


def _safe_parts(raw_name: str) -> list[str]:
    """The entry's path components, or Invalid when the name could land outside the destination."""
    name = raw_name.replace("\\", "/")
    if "\x00" in name:
        raise _refused(raw_name, "its name contains a NUL character")
    if name.startswith("/"):
        raise _refused(raw_name, "it has an absolute path")
    if _DRIVE_LETTER.match(name):
        raise _refused(raw_name, "it has a drive letter")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refused(raw_name, "its path contains '..'")
    return parts


def _is_junk(parts: list[str]) -> bool:
    return bool(_JUNK_FOLDERS.intersection(parts)) or parts[-1] in _JUNK_FILES or parts[-1].startswith("._")


def _refused(raw_name: str, why: str) -> Invalid:
    return Invalid(
        f"The archive entry '{raw_name}' is refused: {why}. "
        "Archives may hold only regular files and folders with relative paths."
    )


def _too_many_files(max_files: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The archive holds more than {max_files} entries. The server's {FILES_LIMIT_SETTING} setting sets this limit."
    )


@contextmanager
def _zip_members(path: Path, max_files: int) -> Iterator[Iterator[tuple[str, _Opener]]]:
    with path.open("rb") as f:
        # zipfile's own reader of the end record, so the sizes checked are exactly those it will then use.
        end = zipfile._EndRecData(f)
    if end is None:
        raise zipfile.BadZipFile("no end of central directory record")
    if end[zipfile._ECD_ENTRIES_TOTAL] > max_files or end[zipfile._ECD_SIZE] > max_files * _ZIP_INDEX_BYTES_PER_ENTRY:
        raise _too_many_files(max_files)
    with zipfile.ZipFile(path) as zf:
        yield (_zip_entry(zf, info) for info in zf.infolist())


def _zip_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[str, _Opener]:
    # Unix archivers keep st_mode in the high 16 bits; that is the only place a zip records a symlink.
    mode = info.external_attr >> 16
    file_type = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise _refused(info.filename, "it is a symlink")
    if file_type and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise _refused(info.filename, "it is a device, pipe or other special file")
    if info.flag_bits & 0x1:
        raise _refused(info.filename, "it is encrypted")
    if info.is_dir() or stat.S_ISDIR(mode):
        return info.filename, None
    return info.filename, lambda: zf.open(info)


@contextmanager
def _tar_members(path: Path) -> Iterator[Iterator[tuple[str, _Opener]]]:
    # Stream mode ("r|gz") reads members in order without the full-archive scan random access needs.
    with tarfile.open(path, mode="r|gz", tarinfo=_BoundedTarInfo) as tf:
        yield (_tar_entry(tf, member) for member in tf)


class _BoundedTarInfo(tarfile.TarInfo):
    """Checks each raw header before tarfile acts on it: oversized metadata and sparse maps never reach memory."""

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        info = super().frombuf(buf, encoding, errors)
        if info.type in _TAR_META_TYPES and info.size > _TAR_META_MAX_BYTES:
            raise Invalid(
                f"The archive has a {info.size}-byte metadata header (the most accepted is {_TAR_META_MAX_BYTES}); "
                "create it again with a standard tar."
            )
        if info.type == tarfile.GNUTYPE_SPARSE:
            # Old GNU sparse maps chain without bound; model files are never sparse.
            raise _refused(info.name, "it is a sparse file")
        return info


def _tar_entry(tf: tarfile.TarFile, member: tarfile.TarInfo) -> tuple[str, _Opener]:
    if member.issym():
        raise _refused(member.name, "it is a symlink")
    if member.islnk():
        raise _refused(member.name, "it is a hardlink")
    if member.isdir():
        return member.name, None
    if not member.isreg():
        raise _refused(member.name, "it is a device, pipe or other special file")
    return member.name, lambda: tf.extractfile(member)
