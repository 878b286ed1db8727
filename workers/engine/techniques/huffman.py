"""The `huffman` technique: losslessly entropy-codes the 8-bit weights of a quantized or clustered ONNX
model into a .cpz container holding the runnable folder (model.onnx, config and tokenizer files).

Measured on all-MiniLM-L6-v2 after `quantize` (per-channel int8, 22.5 M coded weights): 6.163 bits
per weight against a 6.113 entropy bound (+0.8%); the model's share of the .cpz is 17.55 MB against
22.95 MB of ONNX, 17.56 MB for zstd-19 and 17.91 MB for zlib-9 of the same file. Tensors with at
most 16 distinct values (cluster indices) are coded as value pairs where that is smaller, which
amortises the code's whole-bit lengths over two weights (a skewed 3-bit tensor: +6.4% -> +1.2%).
"""

import hashlib
import logging
import time
from pathlib import Path


from workers.engine.errors import EngineUserError
from workers.engine.model_files import CONFIG_FILES, TOKENIZER_FILES
from workers.engine.package import MODEL_FILE
from workers.engine.packing.cpz import CpzSummary, read_cpz, write_cpz
from workers.engine.packing.onnx_symbols import find_symbol_spans
from workers.engine.techniques.huffman_config import HuffmanConfig
from workers.engine.state import ModelState, StepContext

logger = logging.getLogger(__name__)

def _folder_entries(onnx_path: Path, config_dir: Path) -> dict[str, Path]:
    """What `compresso unpack` must restore for onnxruntime and a tokenizer to run the model."""
    entries: dict[str, Path] = {MODEL_FILE: onnx_path}
    for name in (*TOKENIZER_FILES, *CONFIG_FILES):
        if (config_dir / name).is_file():
            entries[name] = config_dir / name
    return entries


def _details(summary: CpzSummary, onnx_bytes: int, seconds: dict[str, float]) -> dict:
    symbols = sum(item.symbols for item in summary.coded)
    coded_bits = sum(item.coded_bits for item in summary.coded)
    entropy = sum(item.entropy_bits for item in summary.coded)
    bits_per_weight = coded_bits / symbols
    entropy_per_weight = entropy / symbols
    return {
        "coded_tensors": len(summary.coded),
        "pair_coded_tensors": sum(item.pairs for item in summary.coded),
        "coded_symbols": symbols,
        "bits_per_weight": round(bits_per_weight, 4),
        "entropy_bits_per_weight": round(entropy_per_weight, 4),
        "overhead_vs_entropy": round(bits_per_weight / entropy_per_weight - 1, 5) if entropy > 0 else None,
        "onnx_bytes": onnx_bytes,
        "packed_bytes": summary.packed_bytes,
        # The model's share alone (without tokenizer and config files), comparable to a general
        # compressor on model.onnx (benchmarks/engine_bench.py compares zstd-19).
        "packed_model_bytes": summary.stored_bytes[MODEL_FILE],
        "encode_seconds": round(seconds["encode"], 3),
        "decode_seconds": round(seconds["decode"], 3),
    }


def apply_huffman(config: HuffmanConfig, state: ModelState, context: StepContext) -> ModelState:
    if state.onnx_path is None:
        raise EngineUserError("huffman needs an ONNX model: put a quantize or cluster step before it.")
    data = state.onnx_path.read_bytes()
    spans = find_symbol_spans(data, config.min_elements)
    if not spans:
        raise EngineUserError(
            f"The ONNX model holds no int8/uint8 weight tensor of at least {config.min_elements} values, so "
            "there is nothing to entropy-code: put a quantize or cluster step before huffman "
            "(or lower min_elements)."
        )
    context.on_progress(0.1)

    out_path = context.work_dir / config.file_name
    started = time.perf_counter()
    summary = write_cpz(_folder_entries(state.onnx_path, state.config_dir), out_path, {MODEL_FILE: spans})
    encoded = time.perf_counter()
    context.on_progress(0.6)
    # Never ship a container that does not give back the exact model it was made from.
    restored = read_cpz(out_path)
    decoded = time.perf_counter()
    if hashlib.sha256(restored[MODEL_FILE]).digest() != hashlib.sha256(data).digest():
        raise RuntimeError(f"{out_path} does not decode to {state.onnx_path} bit for bit; refusing to ship it.")
    context.on_progress(0.8)

    details = _details(summary, len(data), {"encode": encoded - started, "decode": decoded - encoded})
    context.details.update(details)
    context.placement["coding"] = "cpu"
    logger.info(
        "coded %d tensors (%s weights) at %.3f bits/weight (entropy bound %.3f): %.2f MB ONNX -> %.2f MB .cpz",
        details["coded_tensors"], f"{details['coded_symbols']:,}", details["bits_per_weight"],
        details["entropy_bits_per_weight"], len(data) / 1e6, summary.packed_bytes / 1e6,
    )
    context.on_progress(1.0)
    return ModelState(task=state.task, config_dir=state.config_dir, onnx_path=state.onnx_path, packed_path=out_path)
