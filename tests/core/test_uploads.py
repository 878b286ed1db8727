"""receive_upload over a real ASGI app: the body is fed in chunks, as a network would."""

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.requests import Request

from app.core import uploads
from app.core.errors import AppError
from app.core.uploads import receive_upload, sanitize_filename, setting_limit_reason

BOUNDARY = "test-boundary-7MA4YWxkTrZu0gW"
SETTING = "COMPRESSO_LIMITS__UPLOAD_MAX_BYTES"
SUFFIXES = (".zip", ".tar.gz", ".tgz")


def make_app(dest: Path, max_bytes: int) -> FastAPI:
    app = FastAPI()

    @app.exception_handler(AppError)
    async def app_error(_: Request, exc: AppError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.post("/upload")
    async def upload(request: Request) -> dict:
        received = await receive_upload(
            request, dest, max_bytes, limit_reason=setting_limit_reason(SETTING), allowed_suffixes=SUFFIXES, max_field_bytes=1024
        )
        return {
            "fields": received.fields,
            "file_path": str(received.file_path),
            "filename": received.filename,
            "size_bytes": received.size_bytes,
            "sha256": received.sha256,
        }

    return app


def form_body(fields: dict[str, str], files: Iterable[tuple[str, str, bytes]] = ()) -> bytes:
    out = b""
    for name, value in fields.items():
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode()
        out += b"\r\n"
    for name, filename, data in files:
        out += (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        out += data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def chunked(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


class ChunkFeed:
    """An async body that records how much the app pulled and what `dest` held meanwhile."""

    def __init__(self, chunks: list[bytes], dest: Path):
        self.chunks = chunks
        self.dest = dest
        self.sent = 0
        self.files_seen_mid_stream: set[str] = set()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            if self.dest.exists():
                self.files_seen_mid_stream.update(p.name for p in self.dest.iterdir())
            self.sent += 1
            yield chunk


def post(app: FastAPI, content, headers: dict[str, str] | None = None) -> httpx.Response:
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}", **(headers or {})}

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/upload", content=content, headers=headers)

    return asyncio.run(go())


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "dest"


def test_happy_path_streams_file_and_fields(dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A small flush size makes the file reach the disk in many writes, as a large upload would.
    monkeypatch.setattr(uploads, "_FLUSH_BYTES", 10_000)
    data = os.urandom(300_000)
    body = form_body({"name": "my model", "note": "zürich"}, [("file", "bert-tiny.zip", data)])
    feed = ChunkFeed(chunked(body, 7_001), dest)

    response = post(make_app(dest, 1_000_000), feed)

    assert response.status_code == 200, response.text
    got = response.json()
    assert got["fields"] == {"name": "my model", "note": "zürich"}
    assert got["filename"] == "bert-tiny.zip"
    assert got["size_bytes"] == len(data)
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert Path(got["file_path"]) == dest / "bert-tiny.zip"
    assert (dest / "bert-tiny.zip").read_bytes() == data
    assert [p.name for p in dest.iterdir()] == ["bert-tiny.zip"]


def test_client_filename_is_reduced_to_a_safe_basename(dest: Path) -> None:
    body = form_body({}, [("file", "../../etc/my model.tar.gz", b"x")])
    response = post(make_app(dest, 10_000), body)
    assert response.status_code == 200, response.text
    assert response.json()["filename"] == "my_model.tar.gz"
    assert [p.name for p in dest.iterdir()] == ["my_model.tar.gz"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("model.zip", "model.zip"),
        ("C:\\Users\\me\\model.zip", "model.zip"),
        ("../../x.zip", "x.zip"),
        ("..", "upload"),
        (".hidden.zip", "hidden.zip"),
        ("a b;c.zip", "a_b_c.zip"),
        ("", "upload"),
    ],
)
def test_sanitize_filename(raw: str, expected: str) -> None:
    assert sanitize_filename(raw) == expected


def test_streamed_body_over_limit_stops_reading_and_removes_partial_file(
    dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploads, "_FLUSH_BYTES", 1_000)
    body = form_body({"name": "big"}, [("file", "big.zip", os.urandom(200_000))])
    feed = ChunkFeed(chunked(body, 10_000), dest)

    # No Content-Length (chunked transfer), so only the streamed count can catch it.
    response = post(make_app(dest, 50_000), feed)

    assert response.status_code == 413
    assert SETTING in response.json()["detail"]
    assert "50000 bytes" in response.json()["detail"]
    assert any(name.endswith(".part") for name in feed.files_seen_mid_stream), "a partial file was being written"
    assert list(dest.iterdir()) == []
    # The limit is passed on the 6th chunk; nothing after it is pulled from the client.
    assert feed.sent == 6


def test_declared_content_length_over_limit_is_refused_before_reading(dest: Path) -> None:
    feed = ChunkFeed([b"never read"], dest)
    response = post(make_app(dest, 50_000), feed, headers={"content-length": "50001"})
    assert response.status_code == 413
    assert SETTING in response.json()["detail"]
    assert feed.sent == 0
    assert not dest.exists()


def test_understated_content_length_is_not_trusted(dest: Path) -> None:
    body = form_body({}, [("file", "big.zip", os.urandom(100_000))])
    feed = ChunkFeed(chunked(body, 10_000), dest)
    response = post(make_app(dest, 50_000), feed, headers={"content-length": "100"})
    assert response.status_code == 413
    assert list(dest.iterdir()) == []


def test_missing_file_field(dest: Path) -> None:
    response = post(make_app(dest, 10_000), form_body({"name": "no file"}))
    assert response.status_code == 422
    assert "field 'file' is required" in response.json()["detail"]


def test_file_field_without_filename(dest: Path) -> None:
    response = post(make_app(dest, 10_000), form_body({"file": "just text"}))
    assert response.status_code == 422
    assert "'file'" in response.json()["detail"]


def test_disallowed_suffix_names_the_allowed_ones(dest: Path) -> None:
    response = post(make_app(dest, 10_000), form_body({}, [("file", "model.exe", b"MZ")]))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "model.exe" in detail
    assert ".zip, .tar.gz, .tgz" in detail
    assert not dest.exists() or list(dest.iterdir()) == []


def test_second_file_is_refused_and_first_removed(dest: Path) -> None:
    body = form_body({}, [("file", "a.zip", b"aaaa"), ("file", "b.zip", b"bbbb")])
    response = post(make_app(dest, 10_000), body)
    assert response.status_code == 422
    assert "exactly one file" in response.json()["detail"]
    assert list(dest.iterdir()) == []


def test_file_in_another_field_is_refused(dest: Path) -> None:
    body = form_body({}, [("other", "a.zip", b"aaaa")])
    response = post(make_app(dest, 10_000), body)
    assert response.status_code == 422
    assert "'other'" in response.json()["detail"]


def test_text_field_over_its_cap(dest: Path) -> None:
    body = form_body({"name": "x" * 2_000}, [("file", "a.zip", b"a")])
    response = post(make_app(dest, 100_000), body)
    assert response.status_code == 422
    assert "'name' is longer than 1024 bytes" in response.json()["detail"]


def test_not_multipart(dest: Path) -> None:
    response = post(make_app(dest, 10_000), b'{"a": 1}', headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "multipart/form-data" in response.json()["detail"]


def test_multipart_without_boundary(dest: Path) -> None:
    response = post(make_app(dest, 10_000), b"", headers={"content-type": "multipart/form-data"})
    assert response.status_code == 422
    assert "boundary" in response.json()["detail"]


def test_overlong_boundary(dest: Path) -> None:
    headers = {"content-type": "multipart/form-data; boundary=" + "b" * 200}
    response = post(make_app(dest, 10_000), b"", headers=headers)
    assert response.status_code == 422


def test_body_cut_short_removes_partial_file(dest: Path) -> None:
    body = form_body({}, [("file", "a.zip", os.urandom(5_000))])
    response = post(make_app(dest, 100_000), body[:3_000])
    assert response.status_code == 422
    assert "closing boundary" in response.json()["detail"]
    assert list(dest.iterdir()) == []


def test_garbage_body_is_invalid(dest: Path) -> None:
    response = post(make_app(dest, 100_000), b"this is not a multipart body at all" * 10)
    assert response.status_code == 422
    assert not dest.exists() or list(dest.iterdir()) == []
