"""The .cpz container: several files, each a sequence of literal (xz) and Huffman-coded segments,
with per-file length and sha256, written atomically and read back bit for bit.

Decoding needs numpy and the standard library only (no onnx), so `compresso unpack` stays light.
Layout: MAGIC | u16 format version | u32 header length | u32 header crc32 | JSON header | data.
Each file's literal bytes form one xz stream (one stream compresses the small runs between coded
tensors far better than many); coded segments store 256 code lengths, a u32 bit length per block,
then the payload; a segment coded as value pairs ("pairs": true) first stores its 16 values.
xz (stdlib lzma) rather than zlib or zstd: it needs no dependency, and on int8 MiniLM's literal
bytes (scales, biases, graph) it gives 191 kB against zlib-9's 208 kB and zstd-19's 201 kB
(tokenizer.json: 141 kB against zlib's 191 kB), at 0.2 s.
"""

import hashlib
import json
import lzma
import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workers.engine.packing.huffman import (
    ALPHABET,
    PAIR_VALUES,
    HuffmanCoded,
    HuffmanError,
    decode_many,
    encode,
    entropy_bits,
)

MAGIC = b"\x89CPZ\r\n\x1a\n"  # PNG-style: catches text-mode transfers and foreign files early
# 2: segments may code value pairs. Nothing older was shipped, so the reader knows only this one.
FORMAT_VERSION = 2
_PREAMBLE = struct.Struct("<8sHII")
_MAX_HEADER_BYTES = 64 * 1024 * 1024
_SYMBOL_DTYPES = ("int8", "uint8")


class CpzError(ValueError):
    """A .cpz file that cannot be read or written as asked; the message says what is wrong."""


@dataclass(frozen=True)
class SymbolSpan:
    """A run of 8-bit symbols inside a file's bytes (e.g. one int8 initializer of an ONNX file)."""

    offset: int
    length: int
    dtype: str  # "int8" or "uint8"; informative, the code works on bytes
    name: str = ""  # for the report; not stored in the container


@dataclass(frozen=True)
class CodedTensor:
    entry: str
    name: str
    dtype: str
    symbols: int
    coded_bits: int
    entropy_bits: float  # zero-order, per value (not per pair), of the tensor's own values
    pairs: bool = False  # coded two values per symbol


@dataclass
class CpzSummary:
    path: Path
    packed_bytes: int
    coded: list[CodedTensor] = field(default_factory=list)
    # Stored bytes of each entry (its data, not its share of the header), to compare one file alone.
    stored_bytes: dict[str, int] = field(default_factory=dict)


def check_entry_name(name: str) -> str:
    """Entry names are plain file names, so unpacking can never write outside its folder."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or ":" in name  # a drive or stream name on Windows
        or os.path.isabs(name)
        or name != name.strip()
    ):
        raise CpzError(f"entry name {name!r} is not a plain file name (no folders, '..' or absolute paths)")
    return name


def _check_spans(name: str, size: int, spans: Sequence[SymbolSpan]) -> list[SymbolSpan]:
    ordered = sorted(spans, key=lambda span: span.offset)
    end = 0
    for span in ordered:
        if span.dtype not in _SYMBOL_DTYPES:
            raise CpzError(f"{name}: span {span.name!r} has dtype {span.dtype!r}; only {_SYMBOL_DTYPES} are coded")
        if span.offset < end or span.length < 0 or span.offset + span.length > size:
            raise CpzError(f"{name}: span {span.name!r} overlaps another or lies outside the file")
        end = span.offset + span.length
    return ordered


def _encode_entry(
    name: str, data: bytes, spans: Sequence[SymbolSpan], summary: CpzSummary
) -> tuple[dict, list[bytes]]:
    literal = bytearray()
    segments: list[dict] = []
    blobs: list[bytes] = []
    cursor = 0
    view = memoryview(data)
    for span in _check_spans(name, len(data), spans):
        if span.offset > cursor:
            literal += view[cursor : span.offset]
            segments.append({"kind": "literal", "size": span.offset - cursor})
        symbols = np.frombuffer(view[span.offset : span.offset + span.length], dtype=np.uint8)
        coded = encode(symbols)
        pairs = coded.pair_values is not None
        blob = (
            (coded.pair_values.tobytes() if pairs else b"")
            + coded.code_lengths.tobytes() + coded.block_bits.astype("<u4").tobytes() + coded.payload
        )
        segments.append({
            "kind": "huffman", "size": span.length, "stored": len(blob), "dtype": span.dtype,
            "block_size": coded.block_size, "max_code_length": coded.max_code_length, "pairs": pairs,
        })
        blobs.append(blob)
        summary.coded.append(
            CodedTensor(name, span.name, span.dtype, span.length, coded.coded_bits, entropy_bits(symbols), pairs)
        )
        cursor = span.offset + span.length
    if cursor < len(data):
        literal += view[cursor:]
        segments.append({"kind": "literal", "size": len(data) - cursor})
    compressed = lzma.compress(bytes(literal), format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)
    entry = {
        "name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "literal_stored": len(compressed), "segments": segments,
    }
    return entry, [compressed, *blobs]


def write_cpz(
    entries: Mapping[str, Path | bytes],
    out_path: Path,
    spans: Mapping[str, Sequence[SymbolSpan]] | None = None,
) -> CpzSummary:
    """Writes `out_path` (through a temporary name) holding `entries`, name -> file or bytes.

    `spans[name]` lists the byte runs of that entry to Huffman-code; everything else is literal.
    """
    spans = spans or {}
    unknown = set(spans) - set(entries)
    if unknown:
        raise CpzError(f"spans given for entries that are not packed: {sorted(unknown)}")
    summary = CpzSummary(path=out_path, packed_bytes=0)
    header_entries, blobs = [], []
    for name, source in entries.items():
        check_entry_name(name)
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        entry, entry_blobs = _encode_entry(name, data, spans.get(name, ()), summary)
        header_entries.append(entry)
        blobs.extend(entry_blobs)
        summary.stored_bytes[name] = sum(len(blob) for blob in entry_blobs)
    header = json.dumps(
        {"entries": header_entries, "data_bytes": sum(len(blob) for blob in blobs)}, separators=(",", ":")
    ).encode()
    partial = out_path.with_name(out_path.name + ".partial")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("wb") as handle:
        handle.write(_PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header), zlib.crc32(header)))
        handle.write(header)
        for blob in blobs:
            handle.write(blob)
    os.replace(partial, out_path)
    summary.packed_bytes = out_path.stat().st_size
    return summary


def _parse_header(data: bytes) -> tuple[list[dict], int]:
    if len(data) < _PREAMBLE.size or not data.startswith(MAGIC):
        raise CpzError("not a .cpz file (wrong magic number)")
    _, version, header_bytes, crc = _PREAMBLE.unpack_from(data)
    if version != FORMAT_VERSION:
        raise CpzError(
            f".cpz format version {version} is not supported: this reader knows version {FORMAT_VERSION} only; "
            "pack the model again with this version of compresso"
        )
    start = _PREAMBLE.size
    if header_bytes > _MAX_HEADER_BYTES or start + header_bytes > len(data):
        raise CpzError("the .cpz file is truncated (its header is incomplete)")
    header = data[start : start + header_bytes]
    if zlib.crc32(header) != crc:
        raise CpzError("the .cpz header is corrupt (checksum mismatch)")
    try:
        parsed = json.loads(header)
        entries, data_bytes = parsed["entries"], parsed["data_bytes"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CpzError(f"the .cpz header is malformed: {exc}") from exc
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise CpzError("the .cpz header is malformed: entries must be a list of objects")
    if not isinstance(data_bytes, int) or data_bytes < 0:
        raise CpzError("the .cpz header is malformed: data_bytes must be a non-negative integer")
    data_start = start + header_bytes
    if len(data) < data_start + data_bytes:
        raise CpzError(f"the .cpz file is truncated: {len(data)} bytes, {data_start + data_bytes} expected")
    if len(data) > data_start + data_bytes:
        raise CpzError("the .cpz file has trailing bytes after its data")
    return entries, data_start


def _number(segment: dict, key: str, low: int = 0, high: int = 1 << 62) -> int:
    value = segment[key]
    if not isinstance(value, int) or not low <= value <= high:
        raise CpzError(f"the .cpz header holds an invalid {key} ({value!r})")
    return value


def _coded_segment(blob: bytes, segment: dict) -> HuffmanCoded:
    count = _number(segment, "size")
    block_size = _number(segment, "block_size", 1, 1 << 24)
    pairs = segment["pairs"]
    if not isinstance(pairs, bool):
        raise CpzError(f"the .cpz header holds an invalid pairs flag ({pairs!r})")
    table_end = PAIR_VALUES if pairs else 0
    if len(blob) < table_end + ALPHABET:
        raise CpzError("a coded segment is shorter than its code table")
    pair_values = np.frombuffer(blob[:table_end], dtype=np.uint8) if pairs else None
    lengths = np.frombuffer(blob[table_end : table_end + ALPHABET], dtype=np.uint8)
    coded_count = -(-count // 2) if pairs else count
    constant = np.count_nonzero(lengths) <= 1
    blocks = 0 if constant or coded_count == 0 else -(-coded_count // block_size)
    index_start = table_end + ALPHABET
    index_end = index_start + 4 * blocks
    if len(blob) < index_end:
        raise CpzError("a coded segment is shorter than its block index")
    block_bits = np.frombuffer(blob[index_start:index_end], dtype="<u4").astype(np.uint32)
    return HuffmanCoded(
        count=count, code_lengths=lengths, block_bits=block_bits, payload=blob[index_end:],
        block_size=block_size, max_code_length=_number(segment, "max_code_length", 1, 17),
        pair_values=pair_values,
    )


def _decode_entry(entry: dict, data: bytes, offset: int) -> tuple[bytes, int]:
    name = entry["name"]
    literal_stored = _number(entry, "literal_stored")
    try:
        literal = lzma.decompress(data[offset : offset + literal_stored], format=lzma.FORMAT_XZ)
    except lzma.LZMAError as exc:
        raise CpzError(f"{name}: the literal stream is corrupt ({exc})") from exc
    offset += literal_stored
    coded_segments = [segment for segment in entry["segments"] if segment["kind"] == "huffman"]
    coded = []
    for segment in coded_segments:
        stored = _number(segment, "stored")
        coded.append(_coded_segment(data[offset : offset + stored], segment))
        offset += stored
    try:
        decoded = iter(decode_many(coded))
    except HuffmanError as exc:
        raise CpzError(f"{name}: {exc}") from exc
    parts, literal_cursor = [], 0
    for segment in entry["segments"]:
        size = _number(segment, "size")
        if segment["kind"] == "literal":
            parts.append(literal[literal_cursor : literal_cursor + size])
            literal_cursor += size
        elif segment["kind"] == "huffman":
            parts.append(next(decoded).tobytes())
        else:
            raise CpzError(f"{name}: unknown segment kind {segment['kind']!r}")
    content = b"".join(parts)
    if literal_cursor != len(literal) or len(content) != int(entry["size"]):
        raise CpzError(f"{name}: decoded {len(content)} bytes, the header says {entry['size']}")
    if hashlib.sha256(content).hexdigest() != entry["sha256"]:
        raise CpzError(f"{name}: the decoded bytes do not match the stored sha256 (the file is corrupt)")
    return content, offset


def read_cpz(path: Path) -> dict[str, bytes]:
    """Every entry, decoded and checked against its length and sha256; raises CpzError otherwise."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CpzError(f"cannot read {path}: {exc.strerror}") from exc
    entries, offset = _parse_header(data)
    result: dict[str, bytes] = {}
    for entry in entries:
        try:
            name = check_entry_name(entry["name"])
            if name in result:
                raise CpzError(f"entry {name!r} appears twice")
            result[name], offset = _decode_entry(entry, data, offset)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CpzError):
                raise
            raise CpzError(f"the .cpz header describes an entry it cannot hold: {exc!r}") from exc
    return result


def unpack_cpz(path: Path, out_dir: Path, overwrite: bool = False) -> list[Path]:
    """Writes every entry into `out_dir`. Everything is decoded and verified first, then written to
    temporary names and renamed into place, so a failure leaves no half-written file behind."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CpzError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise CpzError(f"{out_dir} is not empty; choose an empty folder or pass --force to overwrite")
    contents = read_cpz(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    partials: list[tuple[Path, Path]] = []
    try:
        for name, content in contents.items():
            partial = out_dir / f".{name}.partial"
            partials.append((partial, out_dir / name))
            partial.write_bytes(content)
    except OSError:
        for partial, _ in partials:
            partial.unlink(missing_ok=True)
        raise
    for partial, final in partials:
        os.replace(partial, final)
    return [final for _, final in partials]
