"""The huffman technique: the canonical length-limited code, the .cpz container (integrity and hostile
input), the handler on a quantized tiny encoder, and `compresso unpack` restoring a runnable folder."""

import hashlib
import heapq
import json
import logging
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from tests.factories import build_tiny_model
from workers.engine.errors import EngineUserError
from workers.engine.loading import load_model, load_tokenizer
from workers.engine.packing import huffman
from workers.engine.packing.cpz import FORMAT_VERSION, MAGIC, CpzError, SymbolSpan, read_cpz, unpack_cpz, write_cpz
from workers.engine.state import ModelState, StepContext
from workers.engine.techniques.huffman import HuffmanConfig, apply_huffman
from workers.engine.techniques.quantize import QuantizeConfig
from workers.engine.techniques.quantize.handler import apply_quantize

COMPRESSO = Path(sys.executable).with_name("compresso")


def rounded_gaussian(count: int, std: float, seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).normal(0.0, std, count)
    return np.clip(np.round(values), -127, 127).astype(np.int8)


def kraft_sum(lengths: np.ndarray) -> float:
    used = lengths[lengths > 0].astype(np.float64)
    return float((2.0 ** -used).sum())


def huffman_cost(counts: list[int]) -> int:
    """Reference: total bits of an unlimited Huffman code (sum of the merged weights)."""
    heap = [count for count in counts if count > 0]
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        total += merged
        heapq.heappush(heap, merged)
    return total


# --- The code ---

SYMBOL_CASES = {
    "skewed int8": lambda rng: (rng.geometric(0.3, 50_001) - 1).clip(0, 127).astype(np.int8)
    * rng.choice(np.array([-1, 1], np.int8), 50_001),
    "one repeated symbol": lambda rng: np.full(10_000, -3, np.int8),
    "all 256 symbols": lambda rng: rng.permutation(np.arange(256, dtype=np.uint8).repeat(37)),
    "empty": lambda rng: np.zeros(0, np.int8),
    "one symbol long": lambda rng: np.array([42], np.int8),
    "three symbols": lambda rng: np.array([1, 2, 1], np.int8),
    "uint8 indices": lambda rng: rng.integers(0, 16, 12_345).astype(np.uint8),
    "2-d, exact blocks": lambda rng: rounded_gaussian(2 * huffman.BLOCK_SIZE, 5).reshape(64, -1),
}


@pytest.mark.parametrize("case", SYMBOL_CASES)
def test_round_trip_is_bit_exact(case):
    symbols = SYMBOL_CASES[case](np.random.default_rng(1))
    coded = huffman.encode(symbols)
    decoded = huffman.decode(coded)
    assert decoded.dtype == np.uint8
    assert decoded.tobytes() == symbols.tobytes()


def test_tensors_decoded_together_match_each_alone():
    rng = np.random.default_rng(2)
    tensors = [rounded_gaussian(30_000, 3, 1), rng.integers(0, 256, 9_000).astype(np.uint8),
               np.full(5, 7, np.int8), np.zeros(0, np.uint8), rounded_gaussian(4_097, 40, 2)]
    coded = [huffman.encode(tensor) for tensor in tensors]
    for tensor, decoded in zip(tensors, huffman.decode_many(coded), strict=True):
        assert decoded.tobytes() == tensor.tobytes()


def test_a_constant_tensor_costs_no_payload():
    coded = huffman.encode(np.full(100_000, 5, np.int8))
    assert coded.payload == b"" and coded.block_bits.size == 0
    assert coded.coded_bits == 8 * huffman.ALPHABET


def test_bits_per_weight_are_within_two_percent_of_the_entropy():
    symbols = rounded_gaussian(1_000_000, 20)
    coded = huffman.encode(symbols)
    bits, bound = coded.coded_bits / symbols.size, huffman.entropy_bits(symbols) / symbols.size
    assert 6.0 < bound < 7.0  # a std-20 Gaussian: log2(20 * sqrt(2 pi e)) = 6.37 bits
    assert bound <= bits <= 1.02 * bound


def discretised_gaussian(count: int, values: np.ndarray, std: float, seed: int = 0) -> np.ndarray:
    """`count` draws of `values` with Gaussian weights over their positions (cluster indices)."""
    position = np.arange(values.size) - (values.size - 1) / 2
    weights = np.exp(-0.5 * (position / std) ** 2)
    return np.random.default_rng(seed).choice(values, size=count, p=weights / weights.sum()).astype(np.uint8)


PAIR_CASES = {
    "2 values {3, 200}, odd": lambda rng: rng.choice(np.array([3, 200], np.uint8), 10_001, p=[0.9, 0.1]),
    "2 values, even": lambda rng: rng.choice(np.array([0, 1], np.uint8), 10_000, p=[0.8, 0.2]),
    "4 values, odd": lambda rng: discretised_gaussian(9_999, np.array([7, 9, 100, 255], np.uint8), 0.8),
    "4 values, one block exactly": lambda rng: discretised_gaussian(
        2 * huffman.BLOCK_SIZE, np.array([0, 1, 2, 3], np.uint8), 1.0),
    "16 values, odd": lambda rng: discretised_gaussian(50_001, np.arange(16, dtype=np.uint8) * 16 + 5, 1.5),
    "16 values int8, even": lambda rng: discretised_gaussian(
        50_000, np.arange(-8, 8).astype(np.int8).view(np.uint8), 1.5).view(np.int8),
    "alternating pair, one coded symbol": lambda rng: np.tile(np.array([4, 9], np.uint8), 3_000),
    "three symbols": lambda rng: np.array([1, 2, 1], np.int8),
    "one symbol": lambda rng: np.array([42], np.uint8),
    "empty": lambda rng: np.zeros(0, np.uint8),
}


@pytest.mark.parametrize("case", PAIR_CASES)
def test_pair_round_trip_is_bit_exact(case):
    symbols = PAIR_CASES[case](np.random.default_rng(5))
    coded = huffman.encode(symbols, pairs=True)
    assert coded.pair_values is not None and coded.count == symbols.size
    assert coded.coded_count == (symbols.size + 1) // 2
    decoded = huffman.decode(coded)
    assert decoded.dtype == np.uint8 and decoded.tobytes() == symbols.tobytes()


def test_pairs_are_chosen_only_when_smaller():
    rng = np.random.default_rng(6)
    cases = [rng.integers(0, 16, 100_000).astype(np.uint8),
             discretised_gaussian(100_000, np.arange(8, dtype=np.uint8), 1.0),
             discretised_gaussian(3_001, np.array([5, 6], np.uint8), 0.5), rng.integers(0, 3, 500).astype(np.uint8)]
    for symbols in cases:
        auto = huffman.encode(symbols)
        both = (huffman.encode(symbols, pairs=True).coded_bits, huffman.encode(symbols, pairs=False).coded_bits)
        assert auto.coded_bits == min(both)
    # Every pair equally often: 1 bit per value either way, so the 16-byte value table decides.
    even = np.tile(np.array([0, 0, 0, 1, 1, 0, 1, 1], np.uint8), 100)
    assert huffman.encode(even).pair_values is None
    assert huffman.encode(even, pairs=True).coded_bits == huffman.encode(even).coded_bits + 8 * huffman.PAIR_VALUES
    assert huffman.encode(rounded_gaussian(100_000, 20)).pair_values is None  # > 16 values
    with pytest.raises(ValueError, match="pairs"):
        huffman.encode(rounded_gaussian(1_000, 20), pairs=True)


def test_pairs_and_single_symbols_decode_together():
    rng = np.random.default_rng(7)
    tensors = [discretised_gaussian(20_001, np.array([3, 200, 17], np.uint8), 0.7), rounded_gaussian(30_000, 3, 1),
               np.tile(np.array([1, 2], np.uint8), 501)[:-1], rng.integers(0, 4, 7).astype(np.uint8)]
    coded = [huffman.encode(tensor, pairs=index != 1) for index, tensor in enumerate(tensors)]
    for tensor, decoded in zip(tensors, huffman.decode_many(coded), strict=True):
        assert decoded.tobytes() == tensor.tobytes()


def test_pairs_bring_a_skewed_3_bit_tensor_within_two_percent_of_the_entropy():
    # Cluster indices of a 3-bit k-means: 8 values, a Gaussian over them (H ~ 2.05 bits).
    symbols = discretised_gaussian(1_000_000, np.arange(8, dtype=np.uint8), 1.0)
    bound = huffman.entropy_bits(symbols) / symbols.size
    single = huffman.encode(symbols, pairs=False).coded_bits / symbols.size
    coded = huffman.encode(symbols)
    paired = coded.coded_bits / symbols.size
    assert coded.pair_values is not None
    assert single > 1.02 * bound  # one symbol per value: ~6% above the bound
    assert bound <= paired <= 1.02 * bound  # pairs: ~1%
    assert huffman.decode(coded).tobytes() == symbols.tobytes()


def test_package_merge_is_optimal_when_the_limit_does_not_bind():
    rng = np.random.default_rng(3)
    for _ in range(20):
        counts = rng.integers(0, 1000, 256) * (rng.random(256) < 0.7)
        lengths = huffman.code_lengths(counts, max_length=30)
        assert int((lengths.astype(np.int64) * counts).sum()) == huffman_cost(list(counts))
        assert kraft_sum(lengths) == pytest.approx(1.0)


def test_the_length_limit_holds_on_a_fibonacci_distribution():
    fibonacci = [1, 1]
    while len(fibonacci) < 26:
        fibonacci.append(fibonacci[-1] + fibonacci[-2])
    counts = np.zeros(huffman.ALPHABET, np.int64)
    counts[: len(fibonacci)] = fibonacci
    # Unlimited, the rarest symbols need 25 bits; the limited code must stay complete and cheap.
    assert huffman.code_lengths(counts, max_length=32).max() == 25
    lengths = huffman.code_lengths(counts)
    assert lengths.max() == huffman.MAX_CODE_LENGTH and kraft_sum(lengths) == pytest.approx(1.0)
    cost = int((lengths.astype(np.int64) * counts).sum())
    assert huffman_cost(list(counts)) <= cost <= 1.01 * huffman_cost(list(counts))

    symbols = np.random.default_rng(4).permutation(np.repeat(np.arange(26, dtype=np.uint8), fibonacci))
    coded = huffman.encode(symbols)
    assert coded.code_lengths.max() <= huffman.MAX_CODE_LENGTH
    assert huffman.decode(coded).tobytes() == symbols.tobytes()


# --- The container ---

def synthetic_file(tmp_path: Path) -> tuple[bytes, Path]:
    """A file of literal text around two symbol runs, packed; returns its bytes and the .cpz."""
    weights = rounded_gaussian(50_000, 10).tobytes()
    data = b"header " * 100 + weights + b"middle" * 50 + bytes(range(256)) * 40 + b"tail"
    spans = [SymbolSpan(700, len(weights), "int8", "w"), SymbolSpan(700 + len(weights) + 300, 10_240, "uint8", "i")]
    path = tmp_path / "synthetic.cpz"
    summary = write_cpz({"blob.bin": data, "notes.txt": b"plain text\n" * 10}, path, {"blob.bin": spans})
    assert [item.symbols for item in summary.coded] == [50_000, 10_240]
    return data, path


def test_a_pair_coded_span_round_trips_and_reports_per_symbol_entropy(tmp_path):
    indices = discretised_gaussian(400_001, np.array([3, 200, 9, 77, 1, 0, 5, 6], np.uint8), 1.0)
    data = b"before" + indices.tobytes() + b"after"
    path = tmp_path / "clustered.cpz"
    summary = write_cpz({"m.onnx": data}, path, {"m.onnx": [SymbolSpan(6, indices.size, "uint8", "idx")]})
    raw = path.read_bytes()
    header = json.loads(raw[18 : 18 + struct.unpack_from("<I", raw, 10)[0]])
    assert [segment.get("pairs") for segment in header["entries"][0]["segments"]] == [None, True, None]
    assert read_cpz(path) == {"m.onnx": data}
    (coded,) = summary.coded
    assert coded.entropy_bits == pytest.approx(huffman.entropy_bits(indices))
    assert coded.entropy_bits <= coded.coded_bits <= 1.02 * coded.entropy_bits


def test_another_format_version_is_a_cpz_error(tmp_path):
    _, path = synthetic_file(tmp_path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<H", raw, 8, FORMAT_VERSION - 1)
    path.write_bytes(bytes(raw))
    old = FORMAT_VERSION - 1
    with pytest.raises(CpzError, match=f"format version {old} is not supported.*pack the model again"):
        read_cpz(path)


def test_several_entries_round_trip(tmp_path):
    data, path = synthetic_file(tmp_path)
    assert read_cpz(path) == {"blob.bin": data, "notes.txt": b"plain text\n" * 10}
    assert not list(tmp_path.glob("*.partial"))


def payload_offsets(path: Path) -> dict[str, int]:
    """Byte positions inside the first coded segment of synthetic_file's container."""
    raw = path.read_bytes()
    header_bytes = struct.unpack_from("<I", raw, 10)[0]
    header = json.loads(raw[18 : 18 + header_bytes])
    start = 18 + header_bytes + header["entries"][0]["literal_stored"]
    return {"literal": 18 + header_bytes + 40, "code table": start + 3, "block index": start + 260,
            "payload": start + 256 + 4 * 13 + 5000}


@pytest.mark.parametrize("where", ["literal", "code table", "block index", "payload"])
def test_a_flipped_byte_is_a_cpz_error(tmp_path, where):
    _, path = synthetic_file(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[payload_offsets(path)[where]] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(CpzError):
        read_cpz(path)


@pytest.mark.parametrize("keep", [0, 5, 17, 100, -1])
def test_a_truncated_file_is_a_cpz_error(tmp_path, keep):
    _, path = synthetic_file(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[:keep] if keep >= 0 else raw[:-1])
    with pytest.raises(CpzError):
        read_cpz(path)


def test_a_foreign_file_and_a_corrupt_header_are_cpz_errors(tmp_path):
    _, path = synthetic_file(tmp_path)
    raw = path.read_bytes()
    (tmp_path / "zip.cpz").write_bytes(b"PK\x03\x04" + raw[4:])
    with pytest.raises(CpzError, match="magic"):
        read_cpz(tmp_path / "zip.cpz")
    corrupt = bytearray(raw)
    corrupt[30] ^= 0x01  # inside the JSON header
    path.write_bytes(bytes(corrupt))
    with pytest.raises(CpzError, match="header"):
        read_cpz(path)


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", "a/b", "a\\b", "..", "", "C:\\x"])
def test_hostile_entry_names_are_refused_on_write(tmp_path, name):
    with pytest.raises(CpzError, match="plain file name"):
        write_cpz({name: b"x"}, tmp_path / "bad.cpz")
    assert not (tmp_path / "bad.cpz").exists()


def test_hostile_entry_names_are_refused_on_read(tmp_path):
    path = tmp_path / "evil.cpz"
    write_cpz({"evil": b"owned"}, path)
    raw = path.read_bytes()
    header_bytes = struct.unpack_from("<I", raw, 10)[0]
    header = raw[18 : 18 + header_bytes].replace(b'"name":"evil"', b'"name":"../x"')
    preamble = MAGIC + struct.pack("<HII", FORMAT_VERSION, len(header), zlib.crc32(header))
    forged = preamble + header + raw[18 + header_bytes :]
    path.write_bytes(forged)
    with pytest.raises(CpzError, match="plain file name"):
        unpack_cpz(path, tmp_path / "out" / "inner")
    assert not (tmp_path / "out").exists() and not (tmp_path / "x").exists()


# --- The technique on a quantized tiny encoder ---

@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> ModelState:
    # hidden 64: the attention matrices (64 x 64) reach the default min_elements of 4096.
    root = tmp_path_factory.mktemp("huffman")
    model_dir = build_tiny_model("encoder", root / "model", hidden_size=64)
    state = ModelState(task="feature-extraction", config_dir=model_dir,
                       torch_model=load_model(model_dir, "feature-extraction"))
    context = StepContext(work_dir=root / "quantize", device="cpu", tokenizer=load_tokenizer(model_dir),
                          sequence_length=32)
    return apply_quantize(QuantizeConfig(scheme="int8_dynamic"), state, context)


def huffman_step(state: ModelState, work_dir: Path, **params) -> tuple[ModelState, StepContext, list[float]]:
    progress: list[float] = []
    context = StepContext(work_dir=work_dir, device="cpu", tokenizer=load_tokenizer(state.config_dir),
                          sequence_length=32, on_progress=progress.append)
    work_dir.mkdir(parents=True, exist_ok=True)
    return apply_huffman(HuffmanConfig(**params), state, context), context, progress


def run_onnx(path: Path, tokenizer_dir: Path) -> np.ndarray:
    tokenizer = load_tokenizer(tokenizer_dir)
    encoded = tokenizer(["the quick fox is fast", "call me back"], padding=True, return_tensors="np")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [item.name for item in session.get_inputs()]
    return session.run(None, {name: encoded[name].astype(np.int64) for name in names})[0]


def unpack_cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(COMPRESSO), "unpack", *map(str, args)], capture_output=True, text=True,
                          env=os.environ | {"HF_HUB_OFFLINE": "1"}, timeout=120)


def test_the_handler_packs_and_unpack_restores_a_runnable_folder(quantized, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="workers.engine.techniques.huffman"):
        packed, context, progress = huffman_step(quantized, tmp_path / "step")
    assert packed.format == "packed" and packed.onnx_path == quantized.onnx_path
    assert packed.packed_path == tmp_path / "step" / "model.cpz"
    details = context.details
    # Two layers x (4 attention + 2 FFN matrices), and the word and position embeddings (uint8).
    assert details["coded_tensors"] == 14
    assert details["entropy_bits_per_weight"] <= details["bits_per_weight"]
    assert details["overhead_vs_entropy"] == pytest.approx(
        details["bits_per_weight"] / details["entropy_bits_per_weight"] - 1, abs=1e-3)
    assert details["onnx_bytes"] == quantized.onnx_path.stat().st_size
    assert details["packed_model_bytes"] < details["packed_bytes"] == packed.size_bytes()
    assert details["packed_model_bytes"] < details["onnx_bytes"]
    json.dumps(details)
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert "bits/weight" in caplog.text

    out = tmp_path / "unpacked"
    result = unpack_cli(packed.packed_path, out)
    assert result.returncode == 0, result.stderr
    assert "model.onnx" in result.stdout
    restored = out / "model.onnx"
    assert hashlib.sha256(restored.read_bytes()).digest() == hashlib.sha256(quantized.onnx_path.read_bytes()).digest()
    assert {"config.json", "tokenizer.json"} <= {path.name for path in out.iterdir()}
    np.testing.assert_array_equal(run_onnx(restored, out), run_onnx(quantized.onnx_path, quantized.config_dir))


def test_unpack_refuses_a_non_empty_folder_unless_forced(quantized, tmp_path):
    packed, _, _ = huffman_step(quantized, tmp_path / "step", file_name="tiny.cpz")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"old")
    refused = unpack_cli(packed.packed_path, out)
    assert refused.returncode == 1 and "not empty" in refused.stderr and "Traceback" not in refused.stderr
    assert (out / "model.onnx").read_bytes() == b"old"
    assert unpack_cli(packed.packed_path, out, "--force").returncode == 0
    assert (out / "model.onnx").read_bytes() == quantized.onnx_path.read_bytes()
    assert not [path for path in out.iterdir() if path.name.endswith(".partial")]


def test_unpack_of_a_bad_file_exits_with_the_message(tmp_path):
    bad = tmp_path / "bad.cpz"
    bad.write_bytes(b"definitely not a container")
    result = unpack_cli(bad, tmp_path / "out")
    assert result.returncode == 1
    assert "wrong magic number" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_fp32_model_is_a_user_error(quantized, tmp_path):
    fp32 = quantized.onnx_path.with_name("model_fp32.onnx")  # the quantize step's own export
    state = ModelState(task=quantized.task, config_dir=quantized.config_dir, onnx_path=fp32)
    with pytest.raises(EngineUserError, match="quantize or cluster step"):
        huffman_step(state, tmp_path)
    with pytest.raises(EngineUserError, match="min_elements"):
        huffman_step(quantized, tmp_path, min_elements=10**9)


@pytest.mark.parametrize("params", [{"file_name": "../model.cpz"}, {"file_name": "sub/model.cpz"},
                                    {"file_name": "model.zip"}, {"min_elements": 0}, {"min_elements": "4096"},
                                    {"level": 3}])
def test_bad_params_are_rejected(params):
    with pytest.raises(ValidationError):
        HuffmanConfig(**params)
