"""Compact encodings of ONNX initializers that onnxruntime decodes itself: a codebook (uint8 indices
plus shared values) and sparse storage (a bitmask plus the nonzero values).

Each encoding replaces an initializer by smaller initializers and a small subgraph of standard
opset-17 ops whose output carries the original name, so the rest of the graph is untouched. All the
inputs of that subgraph are constants, so onnxruntime folds it at session creation: the file is
smaller, and the running model is the dense one.
"""

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

logger = logging.getLogger(__name__)

# Element types store_sparse handles: float weights, and int8/uint8 weights from quantization.
_SPARSE_DTYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT8, TensorProto.UINT8}
# Shared by every sparse tensor's decoder; prefixed so they cannot clash with exported names.
_BIT_SHIFTS = "compact_storage.bit_shifts"
_TWO = "compact_storage.two"
_COLUMN = "compact_storage.column_shape"
_FLAT = "compact_storage.flat_shape"
_ZERO = "compact_storage.zero"
_ZERO_SCALAR = "compact_storage.zero_scalar"

CODEBOOK_MAX_VALUES = 256  # what a uint8 index addresses


@dataclass(frozen=True)
class SparseStorageStats:
    tensors_sparse: int
    names: list[str] = field(default_factory=list)
    # The encoded initializers alone, dense vs mask + values (what the arithmetic predicts)...
    initializer_bytes_before: int = 0
    initializer_bytes_after: int = 0
    # ...and the real files, which is what a user downloads.
    file_bytes_before: int = 0
    file_bytes_after: int = 0


@dataclass(frozen=True)
class CodebookTensor:
    name: str
    elements: int
    values: int  # distinct values, i.e. the codebook's length


def _replace_initializers(graph: onnx.GraphProto, replaced: set[str], added: list[TensorProto]) -> None:
    kept = [init for init in graph.initializer if init.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept + added)


def _prepend_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    # Decoders read only initializers, so putting them first keeps the graph topologically sorted.
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)


def _overridable(graph: onnx.GraphProto) -> set[str]:
    # An initializer that is also a graph input is a default the caller may override: it must stay.
    return {value.name for value in graph.input}


def encode_codebooks(model: onnx.ModelProto, names: list[str]) -> list[CodebookTensor]:
    """Stores each named initializer as `<name>.indices` (uint8, same shape) plus `<name>.codebook`
    (its distinct values, same dtype), decoded by Gather. Modifies `model` in place.

    Raises ValueError when a tensor has more than 256 distinct values (cluster it first).
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    overridable = _overridable(graph)
    added: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    encoded = []
    for name in names:
        if name not in initializers or name in overridable:
            raise ValueError(f"{name!r} is not a constant initializer of the graph.")
        array = numpy_helper.to_array(initializers[name])
        codebook, indices = np.unique(array, return_inverse=True)
        if codebook.size > CODEBOOK_MAX_VALUES:
            raise ValueError(f"{name!r} has {codebook.size} distinct values; a uint8 index addresses 256.")
        added.append(numpy_helper.from_array(indices.reshape(array.shape).astype(np.uint8), f"{name}.indices"))
        added.append(numpy_helper.from_array(codebook, f"{name}.codebook"))
        # Gather only takes int32/int64 indices, so the stored uint8 (what entropy coding works on) is cast.
        nodes.append(
            helper.make_node("Cast", [f"{name}.indices"], [f"{name}.indices_int32"], to=TensorProto.INT32,
                             name=f"{name}.decode/Cast")
        )
        nodes.append(
            helper.make_node("Gather", [f"{name}.codebook", f"{name}.indices_int32"], [name], axis=0,
                             name=f"{name}.decode/Gather")
        )
        encoded.append(CodebookTensor(name=name, elements=int(array.size), values=int(codebook.size)))
    _replace_initializers(graph, {entry.name for entry in encoded}, added)
    _prepend_nodes(graph, nodes)
    return encoded


def _sparse_encoding(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The little-endian bitmask of nonzero elements (bit k of byte j is element 8j + k) and the
    nonzero values after a leading 0, which the decoder gathers for every cleared bit."""
    flat = array.reshape(-1)
    nonzero = flat != 0
    values = np.concatenate([np.zeros(1, flat.dtype), flat[nonzero]])
    return np.packbits(nonzero, bitorder="little"), values


def _sparse_decoder(name: str, array: np.ndarray) -> tuple[list[TensorProto], list[onnx.NodeProto]]:
    mask, values = _sparse_encoding(array)
    p = f"{name}.sparse"
    tensors = [
        numpy_helper.from_array(mask, f"{name}.mask"),
        numpy_helper.from_array(values, f"{name}.values"),
        numpy_helper.from_array(np.array([array.size], np.int64), f"{p}/size"),
        numpy_helper.from_array(np.array(array.shape, np.int64), f"{p}/shape"),
    ]
    # Element i reads values[bit_i * (number of set bits up to i)]: its own value, or the leading 0.
    # Built from ops whose output shape is known without running them (no NonZero/ScatterND), which
    # onnxruntime's constant folding evaluates at session creation; it left a NonZero unfolded.
    # Opset 17 has no BitwiseAnd, so bit k of a byte is (byte >> k) mod 2.
    nodes = [
        helper.make_node("Reshape", [f"{name}.mask", _COLUMN], [f"{p}/bytes"]),
        helper.make_node("BitShift", [f"{p}/bytes", _BIT_SHIFTS], [f"{p}/shifted"], direction="RIGHT"),
        helper.make_node("Mod", [f"{p}/shifted", _TWO], [f"{p}/bits_u8"]),
        helper.make_node("Reshape", [f"{p}/bits_u8", _FLAT], [f"{p}/bits_flat"]),
        # The last byte's padding bits are dropped here, so the final Reshape sees exactly `size` elements.
        helper.make_node("Slice", [f"{p}/bits_flat", _ZERO, f"{p}/size"], [f"{p}/bits_u8_n"]),
        helper.make_node("Cast", [f"{p}/bits_u8_n"], [f"{p}/bits"], to=TensorProto.INT64),
        helper.make_node("CumSum", [f"{p}/bits", _ZERO_SCALAR], [f"{p}/ranks"]),
        helper.make_node("Mul", [f"{p}/bits", f"{p}/ranks"], [f"{p}/positions"]),
        helper.make_node("Gather", [f"{name}.values", f"{p}/positions"], [f"{p}/dense"], axis=0),
        helper.make_node("Reshape", [f"{p}/dense", f"{p}/shape"], [name]),
    ]
    return tensors, nodes


def _shared_sparse_constants() -> list[TensorProto]:
    return [
        numpy_helper.from_array(np.arange(8, dtype=np.uint8), _BIT_SHIFTS),
        numpy_helper.from_array(np.array(2, np.uint8), _TWO),
        numpy_helper.from_array(np.array([-1, 1], np.int64), _COLUMN),
        numpy_helper.from_array(np.array([-1], np.int64), _FLAT),
        numpy_helper.from_array(np.array([0], np.int64), _ZERO),
        numpy_helper.from_array(np.array(0, np.int64), _ZERO_SCALAR),
    ]


def store_sparse(onnx_in: Path, onnx_out: Path, min_elements: int = 4096) -> SparseStorageStats:
    """Writes `onnx_out`: every float32/float16/int8/uint8 initializer of at least `min_elements` whose
    bitmask + nonzero values take fewer bytes than the dense tensor is stored that way.

    Where nothing gains, `onnx_out` is a byte-identical copy of `onnx_in`. The weights decode bit for
    bit, so onnxruntime's outputs equal the dense file's.
    """
    model = onnx.load(str(onnx_in))
    graph = model.graph
    overridable = _overridable(graph)
    added: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    names: list[str] = []
    bytes_before = bytes_after = 0
    for init in graph.initializer:
        if init.data_type not in _SPARSE_DTYPES or init.name in overridable:
            continue
        if int(np.prod(init.dims, dtype=np.int64)) < min_elements:
            continue
        array = numpy_helper.to_array(init)
        # Cheap bound first: mask + values alone must beat the dense bytes.
        if (array.size + 7) // 8 + np.count_nonzero(array) * array.itemsize >= array.nbytes:
            continue
        tensors, decoder = _sparse_decoder(init.name, array)
        # Exact: what the new protos take in the file, decoder nodes and shape constants included.
        if sum(t.ByteSize() for t in tensors) + sum(n.ByteSize() for n in decoder) >= init.ByteSize():
            continue
        added.extend(tensors)
        nodes.extend(decoder)
        names.append(init.name)
        bytes_before += array.nbytes
        bytes_after += len(tensors[0].raw_data) + len(tensors[1].raw_data)  # mask + values

    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    file_before = onnx_in.stat().st_size
    if not names:
        if onnx_out.resolve() != onnx_in.resolve():
            shutil.copyfile(onnx_in, onnx_out)
        logger.info("sparse storage: no tensor gains from it; %s left as it is", onnx_in.name)
        return SparseStorageStats(tensors_sparse=0, file_bytes_before=file_before, file_bytes_after=file_before)

    _replace_initializers(graph, set(names), [*_shared_sparse_constants(), *added])
    _prepend_nodes(graph, nodes)
    onnx.save_model(model, str(onnx_out))
    stats = SparseStorageStats(
        tensors_sparse=len(names),
        names=names,
        initializer_bytes_before=bytes_before,
        initializer_bytes_after=bytes_after,
        file_bytes_before=file_before,
        file_bytes_after=onnx_out.stat().st_size,
    )
    logger.info(
        "sparse storage: %d tensors as bitmask + values (%.2f -> %.2f MB); file %.2f -> %.2f MB",
        stats.tensors_sparse, bytes_before / 1e6, bytes_after / 1e6, file_before / 1e6, stats.file_bytes_after / 1e6,
    )
    return stats
