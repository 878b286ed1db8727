"""extract_archive against real hostile archives built here with zipfile and tarfile."""

import gzip
import io
import stat
import struct
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from app.core.archive import extract_archive
from app.core.errors import Invalid, PayloadTooLarge

MiB = 1024 * 1024
LIMITS = {"max_extracted_bytes": 10 * MiB, "max_files": 100}


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def write_tgz(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def assert_nothing_left(dest: Path) -> None:
    assert not dest.exists()
    assert not [p for p in dest.parent.iterdir() if ".extracting-" in p.name], "the staging folder was left behind"


# --- accepted archives ---------------------------------------------------------------------------


def test_zip_with_single_top_folder_returns_that_folder_and_skips_macos_junk(tmp_path: Path) -> None:
    archive = write_zip(
        tmp_path / "upload.zip",
        {
            "bert/config.json": b'{"model_type": "bert"}',
            "bert/model.safetensors": b"\0" * 1000,
            "bert/.DS_Store": b"junk",
            "__MACOSX/bert/._config.json": b"junk",
        },
    )
    root = extract_archive(archive, tmp_path / "out", **LIMITS)
    assert root == tmp_path / "out" / "bert"
    assert sorted(p.name for p in root.iterdir()) == ["config.json", "model.safetensors"]
    assert (root / "config.json").read_bytes() == b'{"model_type": "bert"}'
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["bert"]


def test_tar_gz_with_single_top_folder_detected_by_content_not_suffix(tmp_path: Path) -> None:
    folder = tar_member("bert", tarfile.DIRTYPE)
    archive = write_tgz(
        tmp_path / "upload.bin",
        [
            (tar_member(".", tarfile.DIRTYPE), None),
            (folder, None),
            (tar_member("bert/config.json"), b"{}"),
            (tar_member("./bert/sub/weights.bin"), b"w" * 5000),
            (tar_member("bert/._config.json"), b"appledouble"),
        ],
    )
    root = extract_archive(archive, tmp_path / "out", **LIMITS)
    assert root == tmp_path / "out" / "bert"
    assert (root / "config.json").read_bytes() == b"{}"
    assert (root / "sub" / "weights.bin").read_bytes() == b"w" * 5000
    assert not (root / "._config.json").exists()


def test_zip_named_tar_gz_is_read_as_zip(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "upload.tar.gz", {"config.json": b"{}"})
    assert extract_archive(archive, tmp_path / "out", **LIMITS) == tmp_path / "out"


def test_files_at_top_level_return_dest_dir(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", {"config.json": b"{}", "model.safetensors": b"x"})
    root = extract_archive(archive, tmp_path / "out", **LIMITS)
    assert root == tmp_path / "out"
    assert sorted(p.name for p in root.iterdir()) == ["config.json", "model.safetensors"]


def test_existing_empty_dest_dir_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    archive = write_zip(tmp_path / "a.zip", {"config.json": b"{}"})
    assert extract_archive(archive, tmp_path / "out", **LIMITS) == tmp_path / "out"


def test_non_empty_dest_dir_is_a_programming_error(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    archive = write_zip(tmp_path / "a.zip", {"config.json": b"{}"})
    with pytest.raises(ValueError):
        extract_archive(archive, tmp_path / "out", **LIMITS)


# --- hostile names ---------------------------------------------------------------------------------

BAD_NAMES = [
    ("/etc/passwd", "absolute path"),
    ("../evil.txt", "'..'"),
    ("model/../../evil.txt", "'..'"),
    ("..\\evil.txt", "'..'"),
    ("C:/Windows/evil.txt", "drive letter"),
    ("C:\\Windows\\evil.txt", "drive letter"),
]


@pytest.mark.parametrize(("name", "why"), BAD_NAMES)
def test_zip_path_escape_is_refused(tmp_path: Path, name: str, why: str) -> None:
    archive = write_zip(tmp_path / "a.zip", {"model/config.json": b"{}", name: b"pwned"})
    with pytest.raises(Invalid) as err:
        extract_archive(archive, tmp_path / "out", **LIMITS)
    assert name in err.value.detail and why in err.value.detail
    assert_nothing_left(tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize(("name", "why"), BAD_NAMES)
def test_tar_path_escape_is_refused(tmp_path: Path, name: str, why: str) -> None:
    archive = write_tgz(tmp_path / "a.tgz", [(tar_member("model/config.json"), b"{}"), (tar_member(name), b"pwned")])
    with pytest.raises(Invalid) as err:
        extract_archive(archive, tmp_path / "out", **LIMITS)
    assert name in err.value.detail and why in err.value.detail
    assert_nothing_left(tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


# --- links and special files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        (tarfile.SYMTYPE, "symlink"),
        (tarfile.LNKTYPE, "hardlink"),
        (tarfile.CHRTYPE, "device"),
        (tarfile.BLKTYPE, "device"),
        (tarfile.FIFOTYPE, "pipe"),
    ],
)
def test_tar_links_and_special_files_are_refused(tmp_path: Path, kind: bytes, why: str) -> None:
    archive = write_tgz(
        tmp_path / "a.tar.gz",
        [(tar_member("model/config.json"), b"{}"), (tar_member("model/link", kind, linkname="/etc/passwd"), None)],
    )
    with pytest.raises(Invalid) as err:
        extract_archive(archive, tmp_path / "out", **LIMITS)
    assert "model/link" in err.value.detail and why in err.value.detail
    assert_nothing_left(tmp_path / "out")


def zip_with_mode(path: Path, name: str, mode: int, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model/config.json", b"{}")
        info = zipfile.ZipInfo(name)
        info.create_system = 3  # Unix, as Info-ZIP writes it
        info.external_attr = mode << 16
        zf.writestr(info, data)
    return path


def test_zip_symlink_is_refused(tmp_path: Path) -> None:
    archive = zip_with_mode(tmp_path / "a.zip", "model/link", stat.S_IFLNK | 0o777, b"/etc/passwd")
    with pytest.raises(Invalid) as err:
        extract_archive(archive, tmp_path / "out", **LIMITS)
    assert "model/link" in err.value.detail and "symlink" in err.value.detail
    assert_nothing_left(tmp_path / "out")


def test_zip_special_file_is_refused(tmp_path: Path) -> None:
    archive = zip_with_mode(tmp_path / "a.zip", "model/pipe", stat.S_IFIFO | 0o644, b"")
    with pytest.raises(Invalid) as err:
        extract_archive(archive, tmp_path / "out", **LIMITS)
    assert "model/pipe" in err.value.detail
    assert_nothing_left(tmp_path / "out")


def test_zip_regular_file_with_unix_mode_is_accepted(tmp_path: Path) -> None:
    archive = zip_with_mode(tmp_path / "a.zip", "model/run.sh", stat.S_IFREG | 0o755, b"echo hi")
    root = extract_archive(archive, tmp_path / "out", **LIMITS)
    assert (root / "run.sh").read_bytes() == b"echo hi"


def test_duplicate_zip_entry_is_refused(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is asked to write
        archive = write_zip(tmp_path / "a.zip", {"config.json": b"{}"})
        with zipfile.ZipFile(archive, "a") as zf:
            zf.writestr("config.json", b"second")
    with pytest.raises(Invalid) as err:
        extract_archive(archive, tmp_path / "out", **LIMITS)
    assert "config.json" in err.value.detail
    assert_nothing_left(tmp_path / "out")


# --- limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["zip", "tgz"])
def test_too_many_entries(tmp_path: Path, fmt: str) -> None:
    names = [f"model/f{i}.txt" for i in range(5)]
    if fmt == "zip":
        archive = write_zip(tmp_path / "a.zip", {n: b"x" for n in names})
    else:
        archive = write_tgz(tmp_path / "a.tgz", [(tar_member(n), b"x") for n in names])
    with pytest.raises(PayloadTooLarge) as err:
        extract_archive(archive, tmp_path / "out", max_extracted_bytes=MiB, max_files=3)
    assert "COMPRESSO_LIMITS__ARCHIVE_MAX_FILES" in err.value.detail
    assert_nothing_left(tmp_path / "out")


@pytest.mark.parametrize("fmt", ["zip", "tgz"])
def test_compression_bomb_is_stopped_while_streaming(tmp_path: Path, fmt: str) -> None:
    # 8 MiB of zeros compresses to a few KiB: only the decompressed count reveals it.
    bomb = b"\0" * (8 * MiB)
    if fmt == "zip":
        archive = write_zip(tmp_path / "a.zip", {"model/a.bin": b"a" * 100, "model/bomb.bin": bomb})
    else:
        members = [(tar_member("model/a.bin"), b"a" * 100), (tar_member("model/bomb.bin"), bomb)]
        archive = write_tgz(tmp_path / "a.tgz", members)
    assert archive.stat().st_size < 100_000
    with pytest.raises(PayloadTooLarge) as err:
        extract_archive(archive, tmp_path / "out", max_extracted_bytes=MiB, max_files=100)
    assert "COMPRESSO_LIMITS__EXTRACTED_MAX_BYTES" in err.value.detail
    assert "model/bomb.bin" in err.value.detail
    assert_nothing_left(tmp_path / "out")


def lie_about_size(archive: Path, declared: int) -> None:
    """Rewrite the uncompressed size in the local header and the central directory of a one-member zip."""
    raw = bytearray(archive.read_bytes())
    local = raw.index(b"PK\x03\x04")
    central = raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, local + 22, declared)
    struct.pack_into("<I", raw, central + 24, declared)
    archive.write_bytes(bytes(raw))


def test_zip_whose_header_understates_the_size_is_refused(tmp_path: Path) -> None:
    real = b"\0" * (4 * MiB)
    archive = write_zip(tmp_path / "a.zip", {"bomb.bin": real})
    lie_about_size(archive, 100)
    assert zipfile.ZipFile(archive).getinfo("bomb.bin").file_size == 100

    with pytest.raises(Invalid) as err:
        extract_archive(archive, tmp_path / "out", max_extracted_bytes=MiB, max_files=100)
    # zipfile stops at the declared size and the CRC then fails: the lie is caught, nothing big is written.
    assert "damaged" in err.value.detail
    assert_nothing_left(tmp_path / "out")


# --- damaged or wrong input -----------------------------------------------------------------------


def test_corrupt_zip(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"PK\x03\x04" + b"garbage" * 100)
    with pytest.raises(Invalid, match="damaged"):
        extract_archive(archive, tmp_path / "out", **LIMITS)
    assert_nothing_left(tmp_path / "out")


def test_corrupt_deflate_stream_in_zip(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", {"model/weights.bin": bytes(range(256)) * 400})
    raw = bytearray(archive.read_bytes())
    start = raw.index(b"PK\x03\x04") + 30 + len("model/weights.bin")
    raw[start + 10 : start + 60] = b"\xff" * 50
    archive.write_bytes(bytes(raw))
    with pytest.raises(Invalid, match="damaged"):
        extract_archive(archive, tmp_path / "out", **LIMITS)
    assert_nothing_left(tmp_path / "out")


def test_truncated_tar_gz(tmp_path: Path) -> None:
    archive = write_tgz(tmp_path / "a.tgz", [(tar_member("model/weights.bin"), bytes(range(256)) * 4000)])
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(Invalid, match="damaged"):
        extract_archive(archive, tmp_path / "out", **LIMITS)
    assert_nothing_left(tmp_path / "out")


def test_gzip_that_is_not_a_tar(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(gzip.compress(b"just some text, not a tar archive" * 50))
    with pytest.raises(Invalid, match="damaged"):
        extract_archive(archive, tmp_path / "out", **LIMITS)
    assert_nothing_left(tmp_path / "out")


def test_not_an_archive(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_text("hello")
    with pytest.raises(Invalid, match="neither a .zip nor a .tar.gz"):
        extract_archive(archive, tmp_path / "out", **LIMITS)
    assert_nothing_left(tmp_path / "out")


def test_empty_zip(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", {})
    with pytest.raises(Invalid, match="no files"):
        extract_archive(archive, tmp_path / "out", **LIMITS)
    assert_nothing_left(tmp_path / "out")


def test_archive_of_only_macos_junk_holds_no_files(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", {"__MACOSX/._x": b"j", ".DS_Store": b"j"})
    with pytest.raises(Invalid, match="no files"):
        extract_archive(archive, tmp_path / "out", **LIMITS)


# --- metadata that the archive libraries would load whole into memory ---------------------------


def test_zip_end_record_understating_the_entry_count_is_still_counted(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", {f"model/f{i}.txt": b"x" for i in range(5)})
    raw = bytearray(archive.read_bytes())
    end = raw.rindex(b"PK\x05\x06")
    struct.pack_into("<HH", raw, end + 8, 1, 1)  # entries on this disk, entries in total
    archive.write_bytes(bytes(raw))
    with pytest.raises(PayloadTooLarge, match="COMPRESSO_LIMITS__ARCHIVE_MAX_FILES"):
        extract_archive(archive, tmp_path / "out", max_extracted_bytes=MiB, max_files=3)
    assert_nothing_left(tmp_path / "out")


def test_zip_index_too_large_for_the_entry_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", {"d" * 100 + "/" + "n" * 5000: b"x"})
    with pytest.raises(PayloadTooLarge, match="COMPRESSO_LIMITS__ARCHIVE_MAX_FILES"):
        extract_archive(archive, tmp_path / "out", max_extracted_bytes=MiB, max_files=1)
    assert_nothing_left(tmp_path / "out")


def test_tar_oversized_pax_header_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "a.tgz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        info = tar_member("model/config.json")
        info.pax_headers = {"comment": "x" * (2 * MiB)}
        info.size = 2
        tf.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(Invalid, match="metadata header"):
        extract_archive(archive, tmp_path / "out", **LIMITS)
    assert_nothing_left(tmp_path / "out")


def test_tar_long_names_within_bounds_are_accepted(tmp_path: Path) -> None:
    name = "model/" + "sub/" * 40 + "weights.bin"  # past the 100-byte ustar field: a GNU/pax long name
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        archive = tmp_path / f"a{fmt}.tgz"
        with tarfile.open(archive, "w:gz", format=fmt) as tf:
            info = tar_member(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
        root = extract_archive(archive, tmp_path / f"out{fmt}", **LIMITS)
        assert (root.parent / name).read_bytes() == b"abc"


def test_tar_gnu_sparse_member_is_refused(tmp_path: Path) -> None:
    archive = write_tgz(tmp_path / "a.tgz", [(tar_member("model/sparse.bin", tarfile.GNUTYPE_SPARSE), b"")])
    with pytest.raises(Invalid, match="sparse"):
        extract_archive(archive, tmp_path / "out", **LIMITS)
    assert_nothing_left(tmp_path / "out")


def test_the_two_archive_symlink_trick_writes_nothing_outside(tmp_path: Path) -> None:
    """Archive 1 plants `link -> <outside>`, archive 2 writes `link/owned`: the first is refused, and
    the second, extracted into a fresh folder as every upload is, stays inside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    planting = write_tgz(tmp_path / "one.tar.gz", [(tar_member("model/link", tarfile.SYMTYPE, str(outside)), None)])
    with pytest.raises(Invalid, match="link"):
        extract_archive(planting, tmp_path / "first", **LIMITS)
    assert_nothing_left(tmp_path / "first")
    following = write_tgz(tmp_path / "two.tar.gz", [(tar_member("model/link/owned"), b"owned")])
    root = extract_archive(following, tmp_path / "second", **LIMITS)
    assert (root / "link" / "owned").read_bytes() == b"owned"
    assert list(outside.iterdir()) == []


def test_a_hundred_thousand_tiny_files_are_refused_by_count(tmp_path: Path) -> None:
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for index in range(100_000):
            zipped.writestr(f"model/f{index}", b"")
    with pytest.raises(PayloadTooLarge, match="more than 10000 entries"):
        extract_archive(archive, tmp_path / "out", max_extracted_bytes=10 * MiB, max_files=10_000)
    assert_nothing_left(tmp_path / "out")
