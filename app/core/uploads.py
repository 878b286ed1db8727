"""Streams one multipart/form-data upload straight to disk: one file part plus small text fields.

Nothing is spooled by starlette and the body is never held in memory; the limit is enforced on the bytes read.
"""

import hashlib
import os
import re
import tempfile
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread
from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.core.errors import Invalid, PayloadTooLarge

KiB = 1024
# File bytes are gathered to this size before one write in a worker thread: big enough that the
# thread hop is cheap, small enough that memory stays bounded whatever the body size.
_FLUSH_BYTES = 1024 * KiB
_MAX_FILENAME_CHARS = 200


@dataclass(frozen=True)
class ReceivedUpload:
    fields: dict[str, str]
    file_path: Path
    filename: str
    size_bytes: int
    sha256: str


async def receive_upload(
    request: Request,
    dest_dir: Path,
    max_bytes: int,
    *,
    limit_reason: str,
    allowed_suffixes: tuple[str, ...],
    file_field: str = "file",
    max_field_bytes: int = 64 * KiB,
    max_fields: int = 32,
) -> ReceivedUpload:
    """Stream the request body into `dest_dir`/<sanitised client filename> and return what was stored.

    `max_bytes` bounds the whole body (file, fields and multipart framing), which is what Content-Length
    declares; `limit_reason` says what sets it (a setting, a tenant's quota), so a refusal says what to change.
    The route must take the raw `Request` (no `File`/`Form` parameters), or FastAPI spools the body first.
    On any failure nothing stays in `dest_dir`; a file of the same name already there is replaced on success.
    """
    boundary = _boundary(request)
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise Invalid("The Content-Length header is not a whole number.")
        # Rejecting early spares the client sending a body we would refuse anyway; the streamed count
        # below is still what is enforced, since the header can lie.
        if int(declared) > max_bytes:
            raise _too_large(max_bytes, limit_reason)

    form = _FormCollector(
        dest_dir,
        file_field=file_field,
        allowed_suffixes=allowed_suffixes,
        max_field_bytes=max_field_bytes,
        max_fields=max_fields,
    )
    try:
        parser = MultipartParser(boundary, form.callbacks())
    except FormParserError as exc:  # e.g. a boundary longer than RFC 2046 allows
        raise Invalid(f"The multipart/form-data Content-Type is unusable: {exc}.") from None
    received = 0
    try:
        async with aclosing(request.stream()) as chunks:
            async for chunk in chunks:
                received += len(chunk)
                if received > max_bytes:
                    raise _too_large(max_bytes, limit_reason)
                try:
                    parser.write(chunk)
                except MultipartParseError as exc:
                    raise Invalid(f"The multipart body is malformed: {exc}.") from None
                if form.pending_bytes >= _FLUSH_BYTES:
                    await form.flush()
        if not form.ended:
            raise Invalid("The multipart body ended before its closing boundary; send the whole form again.")
        await form.flush()
        return await anyio.to_thread.run_sync(form.finish)
    except BaseException:
        # BaseException too: a client disconnect or a cancelled request must not leave a partial file.
        form.discard()
        raise


def sanitize_filename(raw: str) -> str:
    """The client's basename reduced to safe characters; never a path, never hidden, never empty."""
    base = re.split(r"[\\/]", raw)[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".")
    if len(cleaned) > _MAX_FILENAME_CHARS:
        # Keep the tail: the suffix decides how the file is handled later.
        cleaned = cleaned[-_MAX_FILENAME_CHARS:].lstrip(".")
    return cleaned or "upload"


def _boundary(request: Request) -> bytes:
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data":
        raise Invalid("The request must be multipart/form-data (a form with a file field).")
    boundary = options.get(b"boundary")
    if not boundary:
        raise Invalid("The multipart/form-data Content-Type has no boundary parameter.")
    return boundary


def _too_large(max_bytes: int, limit_reason: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"The upload is larger than the limit of {max_bytes} bytes. {limit_reason}")


def setting_limit_reason(setting: str) -> str:
    return f"The server's {setting} setting sets this limit."


class _FormCollector:
    """Receives the parser's callbacks: text fields into memory (capped), the file part towards disk."""

    def __init__(
        self,
        dest_dir: Path,
        *,
        file_field: str,
        allowed_suffixes: tuple[str, ...],
        max_field_bytes: int,
        max_fields: int,
    ):
        self.dest_dir = dest_dir
        self.file_field = file_field
        self.allowed_suffixes = allowed_suffixes
        self.max_field_bytes = max_field_bytes
        self.max_fields = max_fields

        self.fields: dict[str, str] = {}
        self.ended = False
        self.pending_bytes = 0

        self._headers: dict[str, str] = {}
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._part_name: str | None = None
        self._part_is_file = False
        self._field_value = bytearray()

        self._filename: str | None = None
        self._tmp_path: Path | None = None
        self._file: BinaryIO | None = None
        self._pending: list[bytes] = []
        self._hash = hashlib.sha256()
        self._size = 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._part_name = None
        self._part_is_file = False
        self._field_value = bytearray()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._header_name.decode("latin-1").strip().lower()
        self._headers[name] = self._header_value.decode("latin-1")
        self._header_name = bytearray()
        self._header_value = bytearray()

    def _on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get("content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise Invalid("Every part of the form needs a Content-Disposition: form-data header with a name.")
        name = options[b"name"].decode("utf-8", errors="replace")
        raw_filename = options.get(b"filename")
        self._part_name = name
        if name == self.file_field:
            if self._filename is not None:
                raise Invalid(f"Send exactly one file in the field '{self.file_field}'.")
            if not raw_filename:
                raise Invalid(f"The field '{self.file_field}' must be a file upload with a filename.")
            self._start_file(raw_filename.decode("utf-8", errors="replace"))
            self._part_is_file = True
        elif raw_filename is not None:
            raise Invalid(f"Only the field '{self.file_field}' may hold a file; '{name}' holds one too.")
        elif name in self.fields:
            raise Invalid(f"The field '{name}' appears more than once.")
        elif len(self.fields) >= self.max_fields:
            raise Invalid(f"The form has more than {self.max_fields} text fields.")

    def _start_file(self, raw_filename: str) -> None:
        filename = sanitize_filename(raw_filename)
        if not filename.lower().endswith(tuple(s.lower() for s in self.allowed_suffixes)):
            allowed = ", ".join(self.allowed_suffixes)
            raise Invalid(f"The file '{filename}' has an unsupported type; the allowed suffixes are: {allowed}.")
        self.dest_dir.mkdir(parents=True, exist_ok=True)
        # A hidden temporary name until the body is complete, so a crash mid-upload never leaves
        # something that looks like a finished file.
        fd, tmp = tempfile.mkstemp(dir=self.dest_dir, prefix=".upload-", suffix=".part")
        self._tmp_path = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self._filename = filename

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part_is_file:
            self._pending.append(data[start:end])
            self.pending_bytes += end - start
            return
        self._field_value += data[start:end]
        if len(self._field_value) > self.max_field_bytes:
            raise Invalid(f"The field '{self._part_name}' is longer than {self.max_field_bytes} bytes.")

    def _on_part_end(self) -> None:
        if self._part_is_file or self._part_name is None:
            return
        try:
            self.fields[self._part_name] = self._field_value.decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid(f"The field '{self._part_name}' is not valid UTF-8 text.") from None

    def _on_end(self) -> None:
        self.ended = True

    async def flush(self) -> None:
        if not self._pending:
            return
        chunks, self._pending, self.pending_bytes = self._pending, [], 0
        await anyio.to_thread.run_sync(self._write, chunks)

    def _write(self, chunks: list[bytes]) -> None:
        assert self._file is not None
        for chunk in chunks:
            self._hash.update(chunk)
            self._file.write(chunk)
            self._size += len(chunk)

    def finish(self) -> ReceivedUpload:
        if self._file is None or self._tmp_path is None or self._filename is None:
            raise Invalid(f"The form field '{self.file_field}' is required: attach the file to upload.")
        self._file.close()
        final_path = self.dest_dir / self._filename
        os.replace(self._tmp_path, final_path)
        self._tmp_path = None
        return ReceivedUpload(
            fields=dict(self.fields),
            file_path=final_path,
            filename=self._filename,
            size_bytes=self._size,
            sha256=self._hash.hexdigest(),
        )

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tmp_path is not None:
            self._tmp_path.unlink(missing_ok=True)
            self._tmp_path = None
