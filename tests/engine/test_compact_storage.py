"""Sparse storage and codebooks of ONNX initializers: the file shrinks by what the bitmask arithmetic
predicts, onnxruntime's outputs are unchanged bit for bit, dense files are left alone, int8 weights
round-trip, and onnxruntime folds the decoders away at session creation."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from tests.factories import build_tiny_model
from workers.engine.export.compact_storage import encode_codebooks, store_sparse
from workers.engine.export.onnx import export_onnx
from workers.engine.loading import load_model, load_tokenizer, model_input_names

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Please call me back when you have a minute."]
# Decoder nodes and shape constants a sparse tensor adds to the file, beyond its mask and values.
OVERHEAD_PER_TENSOR = 1536


@pytest.fixture(scope="module")
def wide_encoder(tmp_path_factory) -> Path:
    # hidden 64: its Linear weights (64x64, 64x128) reach the default min_elements of 4096.
    return build_tiny_model("encoder", tmp_path_factory.mktemp("wide") / "encoder", hidden_size=64)


def export(model_dir: Path, path: Path, prune=None) -> Path:
    model = load_model(model_dir, "feature-extraction")
    if prune is not None:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.mul_(prune(module.weight))
    return export_onnx(model, "feature-extraction", model_input_names(model, load_tokenizer(model_dir)), path)


def magnitude_mask(sparsity: float):
    def mask(weight: torch.Tensor) -> torch.Tensor:
        threshold = weight.abs().flatten().kthvalue(int(sparsity * weight.numel())).values
        return (weight.abs() > threshold).float()

    return mask


def two_of_four(weight: torch.Tensor) -> torch.Tensor:
    """Keeps the 2 largest of every 4 consecutive input weights (the 2:4 pattern of sparse tensor cores)."""
    groups = weight.abs().reshape(weight.shape[0], -1, 4)
    keep = torch.zeros_like(groups).scatter_(2, groups.topk(2, dim=2).indices, 1.0)
    return keep.reshape(weight.shape)


def run(path: Path, model_dir: Path, optimized: Path | None = None) -> np.ndarray:
    options = ort.SessionOptions()
    if optimized is not None:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(optimized)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    encoded = load_tokenizer(model_dir)(TEXTS, padding=True, return_tensors="np")
    return session.run(None, {i.name: encoded[i.name].astype(np.int64) for i in session.get_inputs()})[0]


def predicted_saving(path: Path, names: list[str]) -> int:
    """Dense bytes minus (1 bit per element + the nonzero values + one leading zero value)."""
    arrays = {init.name: numpy_helper.to_array(init) for init in onnx.load(str(path)).graph.initializer}
    saving = 0
    for name in names:
        array = arrays[name]
        saving += array.nbytes - ((array.size + 7) // 8 + (np.count_nonzero(array) + 1) * array.itemsize)
    return saving


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_pruned_weights_shrink_the_file_as_predicted_and_outputs_are_identical(wide_encoder, tmp_path, sparsity):
    dense = export(wide_encoder, tmp_path / "dense.onnx", magnitude_mask(sparsity))
    stats = store_sparse(dense, tmp_path / "sparse.onnx")
    # The 12 Linear layers of the two encoder layers; embeddings and LayerNorms are dense.
    assert stats.tensors_sparse == 12
    saved = stats.file_bytes_before - stats.file_bytes_after
    predicted = predicted_saving(dense, stats.names)
    assert predicted - OVERHEAD_PER_TENSOR * stats.tensors_sparse < saved <= predicted
    assert stats.file_bytes_after == (tmp_path / "sparse.onnx").stat().st_size
    assert stats.initializer_bytes_before - stats.initializer_bytes_after == predicted
    assert np.array_equal(run(dense, wide_encoder), run(tmp_path / "sparse.onnx", wide_encoder))


def test_onnxruntime_folds_the_decoders_at_session_creation(wide_encoder, tmp_path):
    dense = export(wide_encoder, tmp_path / "dense.onnx", magnitude_mask(0.5))
    store_sparse(dense, tmp_path / "sparse.onnx")
    run(tmp_path / "sparse.onnx", wide_encoder, optimized=tmp_path / "optimized.onnx")
    optimized = onnx.load(str(tmp_path / "optimized.onnx")).graph
    ops = {node.op_type for node in optimized.node}
    assert not ops & {"BitShift", "Mod", "CumSum"}
    assert not any(".mask" in name or ".values" in name for node in optimized.node for name in node.input)


def test_a_dense_model_is_left_byte_identical(wide_encoder, tmp_path):
    dense = export(wide_encoder, tmp_path / "dense.onnx")
    stats = store_sparse(dense, tmp_path / "out.onnx")
    assert stats.tensors_sparse == 0 and stats.file_bytes_after == stats.file_bytes_before
    assert (tmp_path / "out.onnx").read_bytes() == dense.read_bytes()


def test_two_of_four_sparsity_is_stored_sparse(wide_encoder, tmp_path):
    dense = export(wide_encoder, tmp_path / "dense.onnx", two_of_four)
    stats = store_sparse(dense, tmp_path / "sparse.onnx")
    assert stats.tensors_sparse == 12
    # Half the values plus 1 bit per element: about 0.53 of the dense bytes.
    assert stats.initializer_bytes_after / stats.initializer_bytes_before == pytest.approx(0.5 + 1 / 32, abs=0.002)
    assert np.array_equal(run(dense, wide_encoder), run(tmp_path / "sparse.onnx", wide_encoder))


def test_int8_quantized_sparse_weights_round_trip(wide_encoder, tmp_path):
    dense = export(wide_encoder, tmp_path / "dense.onnx", magnitude_mask(0.9))
    quantized = tmp_path / "int8.onnx"
    quantize_dynamic(dense, quantized, per_channel=True, weight_type=QuantType.QInt8)
    arrays = {init.name: numpy_helper.to_array(init) for init in onnx.load(str(quantized)).graph.initializer}
    int8 = [name for name, array in arrays.items() if array.dtype == np.int8 and array.size >= 4096]
    # Symmetric int8 maps 0.0 to 0, so the pruned weights are still zeros for the sparse pass.
    assert int8 and all(np.mean(arrays[name] == 0) >= 0.89 for name in int8)

    stats = store_sparse(quantized, tmp_path / "int8_sparse.onnx")
    assert set(int8) <= set(stats.names)
    saved = stats.file_bytes_before - stats.file_bytes_after
    predicted = predicted_saving(quantized, stats.names)
    assert predicted - OVERHEAD_PER_TENSOR * stats.tensors_sparse < saved <= predicted
    assert np.array_equal(run(quantized, wide_encoder), run(tmp_path / "int8_sparse.onnx", wide_encoder))


def test_min_elements_leaves_small_tensors_dense(wide_encoder, tmp_path):
    dense = export(wide_encoder, tmp_path / "dense.onnx", magnitude_mask(0.9))
    stats = store_sparse(dense, tmp_path / "sparse.onnx", min_elements=8192)
    # Only the 64x128 and 128x64 FFN weights have 8192 elements.
    assert stats.tensors_sparse == 4


def test_codebooks_decode_bit_for_bit_and_are_folded(wide_encoder, tmp_path):
    dense = export(wide_encoder, tmp_path / "dense.onnx")
    model = onnx.load(str(dense))
    names = []
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.ndim == 2 and array.size >= 4096:
            # 16 shared values, as cluster leaves them.
            levels = np.linspace(array.min(), array.max(), 16, dtype=np.float32)
            init.CopyFrom(numpy_helper.from_array(levels[np.abs(array[..., None] - levels).argmin(-1)], init.name))
            names.append(init.name)
    onnx.save_model(model, str(tmp_path / "shared.onnx"))
    encoded = encode_codebooks(model, names)
    onnx.save_model(model, str(tmp_path / "codebook.onnx"))

    assert {entry.name for entry in encoded} == set(names) and all(entry.values <= 16 for entry in encoded)
    stored = {init.name: init for init in model.graph.initializer}
    assert all(stored[f"{name}.indices"].data_type == onnx.TensorProto.UINT8 for name in names)
    assert (tmp_path / "codebook.onnx").stat().st_size < 0.5 * (tmp_path / "shared.onnx").stat().st_size
    outputs = run(tmp_path / "codebook.onnx", wide_encoder, optimized=tmp_path / "optimized.onnx")
    # Same optimization level on both sides: different fusions reorder float sums.
    assert np.array_equal(run(tmp_path / "shared.onnx", wide_encoder, optimized=tmp_path / "shared_opt.onnx"), outputs)
    optimized = onnx.load(str(tmp_path / "optimized.onnx")).graph
    assert not any(name.endswith((".indices", ".codebook")) for node in optimized.node for name in node.input)


def test_a_codebook_needs_at_most_256_values(wide_encoder, tmp_path):
    model = onnx.load(str(export(wide_encoder, tmp_path / "dense.onnx")))
    weight = next(init.name for init in model.graph.initializer if init.name.startswith("onnx::MatMul"))
    with pytest.raises(ValueError, match="distinct values; a uint8 index addresses 256"):
        encode_codebooks(model, [weight])
