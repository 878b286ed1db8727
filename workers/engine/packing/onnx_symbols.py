"""Finds the 8-bit integer initializers of an ONNX file (quantized weights, cluster indices) as byte
spans of the serialized file, so the container can code them in place and copy the rest literally."""

import logging

import onnx

from workers.engine.packing.cpz import SymbolSpan

logger = logging.getLogger(__name__)

_SYMBOL_TYPES = {onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8"}
# TensorProto.raw_data is field 9, length-delimited: tag byte (9 << 3) | 2.
_RAW_DATA_TAG = b"\x4a"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def find_symbol_spans(data: bytes, min_elements: int) -> list[SymbolSpan]:
    """Spans of every int8/uint8 initializer with at least `min_elements` values stored as raw_data.

    Each is located in the file's bytes by searching forward, in graph order, for its raw_data
    field (tag, length, bytes), so a match is the field itself, not equal bytes by chance. Any span
    found is byte-exact by construction: the container copies everything around it verbatim.
    """
    model = onnx.load_model_from_string(data)
    spans: list[SymbolSpan] = []
    cursor = 0
    for initializer in model.graph.initializer:
        dtype = _SYMBOL_TYPES.get(initializer.data_type)
        raw = initializer.raw_data
        if dtype is None or len(raw) < max(min_elements, 1):
            continue
        field = _RAW_DATA_TAG + _varint(len(raw))
        found = data.find(field + raw, cursor)
        if found < 0:
            # Only an unusual serializer (reordered fields) gets here; the tensor stays literal.
            logger.warning("initializer %s not found in serialized order; left uncoded", initializer.name)
            continue
        spans.append(SymbolSpan(offset=found + len(field), length=len(raw), dtype=dtype, name=initializer.name))
        cursor = found + len(field) + len(raw)
    return spans
