"""Safetensors headers are checked against the file before anything loads it: a header that
declares more than the file holds (a terabyte in a few bytes) is refused from the header alone."""

import json
import resource
import struct

import pytest

from tests.factories import build_tiny_model
from workers.engine.model_folder import ModelFolderError, inspect_model_folder, safetensors_num_parameters


def write_safetensors(path, header: dict, data: bytes = b"", header_len: int | None = None):
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded) if header_len is None else header_len) + encoded + data)
    return path


def test_a_real_model_passes_and_counts_its_parameters(tmp_path):
    info = inspect_model_folder(build_tiny_model("encoder", tmp_path / "model"))
    assert info.num_parameters > 10_000


@pytest.mark.parametrize(("header", "data", "why"), [
    ({"w": {"dtype": "F32", "shape": [1 << 20, 1 << 18], "data_offsets": [0, 1 << 40]}}, b"\0" * 16,
     "declares 1,099,511,627,776 bytes that the file does not hold"),
    ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, b"\0" * 8, "does not hold"),
    ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 8]}}, b"\0" * 16, "does not hold"),
    ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [-4, 12]}}, b"\0" * 16, "does not hold"),
    ({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 1]}}, b"\0", "unknown dtype 'Q4'"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "bad shape"),
    ({"w": {"dtype": "F32", "shape": [1]}}, b"\0" * 4, "no data offsets"),
])
def test_a_header_that_lies_about_the_data_is_refused(tmp_path, header, data, why):
    with pytest.raises(ModelFolderError, match=why):
        safetensors_num_parameters(write_safetensors(tmp_path / "model.safetensors", header, data))


def test_a_header_length_of_a_terabyte_is_refused_without_reading_it(tmp_path):
    path = write_safetensors(tmp_path / "model.safetensors", {}, header_len=1 << 40)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ModelFolderError, match="header is too large"):
        safetensors_num_parameters(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: nothing was allocated
