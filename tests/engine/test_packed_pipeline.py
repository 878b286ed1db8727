"""[quantize, huffman] end to end: the package ships only the .cpz, the report's result is measured
on the model unpacked from it, and its size is the .cpz's."""

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.engine.conftest import FAST_EVAL
from workers.engine.pipeline import PipelineRequest, run_pipeline
from workers.engine.recipe import Recipe

HUFFMAN = {"technique": "huffman", "params": {"min_elements": 256}}


@pytest.mark.parametrize("first", [
    {"technique": "quantize", "params": {"scheme": "int8_dynamic"}},
    {"technique": "cluster", "params": {"bits": 4, "min_elements": 256}},
], ids=["quantize", "cluster"])
def test_symbols_then_huffman_ships_a_cpz_measured_after_unpacking(tiny_models, tmp_path, first):
    request = PipelineRequest(
        model_dir=tiny_models["encoder"], recipe=Recipe.from_dict({"steps": [first, HUFFMAN]}),
        work_dir=tmp_path / "work", output_dir=tmp_path / "out", eval=FAST_EVAL,
    )
    result = run_pipeline(request, lambda stage, fraction: None)
    report = result.report
    quantize_step, huffman_step = report["steps"]  # quantize_step: whichever made the symbols
    assert quantize_step["format_after"] == "onnx" and huffman_step["format_after"] == "packed"
    details = huffman_step["details"]
    assert details["coded_tensors"] > 0
    # Tiny tensors pay their 256-byte code tables, so only the bound is checked here (the bench checks 2%).
    assert details["entropy_bits_per_weight"] <= details["bits_per_weight"]
    # Lossless: the step changes the bytes, never the outputs.
    assert huffman_step["fidelity_after"]["metrics"] == quantize_step["fidelity_after"]["metrics"]
    assert huffman_step["size_bytes_after"] < quantize_step["size_bytes_after"]

    assert report["result"]["format"] == "cpz"
    assert [item["path"] for item in report["files"]] == ["README.md", "model.cpz", "report.json"]
    with zipfile.ZipFile(result.model_zip) as archive:
        assert sorted(archive.namelist()) == ["README.md", "model.cpz", "report.json"]
        archive.extractall(tmp_path / "package")
    cpz = tmp_path / "package" / "model.cpz"
    assert report["result"]["size_bytes"] == cpz.stat().st_size == huffman_step["size_bytes_after"]

    unpacked = tmp_path / "runnable"
    compresso = Path(sys.executable).with_name("compresso")
    subprocess.run([str(compresso), "unpack", str(cpz), str(unpacked)], check=True, capture_output=True)
    assert {"model.onnx", "config.json", "tokenizer.json"} <= {path.name for path in unpacked.iterdir()}
    session = ort.InferenceSession(str(unpacked / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.array([[2, 10, 11, 3]], dtype=np.int64)
    feeds = {item.name: (ids if item.name == "input_ids" else np.ones_like(ids) if item.name == "attention_mask"
                         else np.zeros_like(ids)) for item in session.get_inputs()}
    assert np.isfinite(session.run(None, feeds)[0]).all()
