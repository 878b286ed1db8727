"""Builds upload archives for tests: a model folder zipped or tarred the way users do it."""

import io
import tarfile
import zipfile
from pathlib import Path


def zip_folder(folder: Path, dest: Path, *, top: str | None = "model") -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                name = str(path.relative_to(folder))
                archive.write(path, f"{top}/{name}" if top else name)
    return dest


def tar_folder(folder: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as archive:
        archive.add(folder, arcname="model")
    return dest


def zip_with_extra(folder: Path, dest: Path, extra: dict[str, bytes]) -> Path:
    """The folder plus extra members written verbatim (names are not sanitised: tests use hostile ones)."""
    zip_folder(folder, dest, top=None)
    with zipfile.ZipFile(dest, "a") as archive:
        for name, data in extra.items():
            archive.writestr(name, data)
    return dest


def tar_with_symlink(folder: Path, dest: Path, link_name: str, target: str) -> Path:
    with tarfile.open(dest, "w:gz") as archive:
        archive.add(folder, arcname=".")
        info = tarfile.TarInfo(link_name)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        archive.addfile(info, io.BytesIO(b""))
    return dest
