"""A torch result ships as transformers weights beside model.onnx when config.json still describes
it, and as ONNX only when its layers have no transformers form."""

import zipfile

import torch
from transformers import AutoModel

from tests.engine.conftest import FAST_EVAL
from workers.engine.pipeline import PipelineRequest, run_pipeline
from workers.engine.recipe import Recipe


def run(tiny_models, tmp_path, params):
    request = PipelineRequest(
        model_dir=tiny_models["encoder"],
        recipe=Recipe.from_dict({"steps": [{"technique": "low_rank", "params": params}]}),
        work_dir=tmp_path / "work",
        output_dir=tmp_path / "out",
        eval=FAST_EVAL,
    )
    return run_pipeline(request, lambda stage, fraction: None)


def test_unchanged_architecture_ships_loadable_safetensors(tiny_models, tmp_path):
    # Random weights have flat spectra: keeping 99.9% of the energy leaves every layer whole.
    result = run(tiny_models, tmp_path, {"energy": 0.999})
    names = {item["path"]: item for item in result.report["files"]}
    assert names["model.safetensors"]["runtime"] == "transformers"
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(result.model_zip) as archive:
        archive.extractall(folder)
    reloaded = AutoModel.from_pretrained(folder).eval()
    original = AutoModel.from_pretrained(tiny_models["encoder"]).eval()
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).last_hidden_state, original(input_ids=ids).last_hidden_state,
                              atol=1e-4)


def test_factorised_layers_ship_onnx_only(tiny_models, tmp_path):
    result = run(tiny_models, tmp_path, {"rank_fraction": 0.1})
    paths = {item["path"] for item in result.report["files"]}
    assert "model.onnx" in paths and "model.safetensors" not in paths
    with zipfile.ZipFile(result.model_zip) as archive:
        assert "model.safetensors" not in archive.namelist()
