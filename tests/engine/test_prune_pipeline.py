"""prune through the whole pipeline: unstructured zeros become a really smaller file (sparse
storage), and structurally pruned models ship weights that reload outside the engine."""

import zipfile

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModel

from tests.engine.conftest import FAST_EVAL
from tests.factories import build_tiny_model
from workers.engine.pipeline import PipelineRequest, run_pipeline
from workers.engine.pruned_model import load_pruned_model
from workers.engine.recipe import Recipe


def run(model_dir, tmp_path, params):
    request = PipelineRequest(
        model_dir=model_dir,
        recipe=Recipe.from_dict({"steps": [{"technique": "prune", "params": params}]}),
        work_dir=tmp_path / "work", output_dir=tmp_path / "out", eval=FAST_EVAL,
    )
    result = run_pipeline(request, lambda stage, fraction: None)
    folder = tmp_path / "package"
    with zipfile.ZipFile(result.model_zip) as archive:
        archive.extractall(folder)
    return result.report, folder


def onnx_output(folder, ids):
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return session.run(None, {item.name: feeds[item.name] for item in session.get_inputs()})[0]


IDS = np.array([[2, 10, 11, 12, 13, 3]], dtype=np.int64)


@pytest.fixture(scope="module")
def wider_encoder(tmp_path_factory):
    # Tensors of the default tiny model are below the size where a bitmask beats dense storage.
    return build_tiny_model("encoder", tmp_path_factory.mktemp("wider") / "encoder", hidden_size=128)


def test_unstructured_zeros_are_stored_sparse_and_the_file_shrinks(wider_encoder, tmp_path):
    report, _ = run(wider_encoder, tmp_path, {"structure": "unstructured", "sparsity": 0.8})
    [step] = report["steps"]
    assert step["details"]["nonzero_parameters_after"] < step["details"]["nonzero_parameters_before"]
    storage = report["storage"]
    assert storage["sparse_tensors"] > 0 and storage["sparse_bytes"] < 0.5 * storage["dense_bytes"]
    assert report["result"]["size_bytes"] < report["original"]["size_bytes"]


@pytest.mark.parametrize("params, loader", [
    ({"structure": "neurons", "sparsity": 0.5, "scope": "per_layer"}, "transformers"),
    ({"structure": "heads", "sparsity": 0.5}, "compresso"),
], ids=["neurons-per-layer", "heads"])
def test_structured_pruning_ships_weights_that_reload(tiny_models, tmp_path, params, loader):
    report, folder = run(tiny_models["encoder"], tmp_path, params)
    paths = {item["path"] for item in report["files"]}
    assert "model.safetensors" in paths
    assert ("pruned_shapes.json" in paths) == (loader == "compresso")
    assert report["result"]["num_parameters"] < report["original"]["num_parameters"]
    if loader == "transformers":
        model = AutoModel.from_pretrained(folder).eval()
    else:
        with pytest.raises(Exception):
            AutoModel.from_pretrained(folder)  # per-layer head counts do not fit one config
        model = load_pruned_model(folder, "feature-extraction")
    with torch.no_grad():
        torch_output = model(input_ids=torch.from_numpy(IDS), attention_mask=torch.ones(1, 6, dtype=torch.long),
                             token_type_ids=torch.zeros(1, 6, dtype=torch.long)).last_hidden_state.numpy()
    np.testing.assert_allclose(torch_output, onnx_output(folder, IDS), atol=1e-4)
