"""The cluster technique: at most 2^bits values per tensor stored as uint8 indices + codebook, runs in
onnxruntime, GPT-2's tied embeddings, skip patterns, error compensation, and param validation."""

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from pydantic import ValidationError

from workers.engine.errors import EngineUserError
from workers.engine.loading import load_model, load_tokenizer
from workers.engine.model_folder import inspect_model_folder
from workers.engine.state import ModelState, StepContext
from workers.engine.techniques.cluster import ClusterConfig, apply_cluster
from workers.engine.techniques.cluster_kmeans import gptq_codebook, kmeans_1d, nearest_centroid

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back when you have a minute.",
    "The central bank left interest rates unchanged this year.",
    "Our team won the game after a long and difficult season.",
]
BUILTIN = Path(__file__).parents[2] / "workers/engine/evaluation/data/builtin_sample.txt"
CALIBRATION = BUILTIN.read_text(encoding="utf-8").splitlines()[:48]


def cluster(model_dir: Path, work_dir: Path, progress: list[float] | None = None, texts=CALIBRATION, **params):
    task = inspect_model_folder(model_dir).task
    state = ModelState(task=task, config_dir=model_dir, torch_model=load_model(model_dir, task))
    context = StepContext(
        work_dir=work_dir, device="cpu", tokenizer=load_tokenizer(model_dir), sequence_length=64,
        calibration_texts=texts, on_progress=(progress.append if progress is not None else lambda fraction: None),
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    result = apply_cluster(ClusterConfig(**params), state, context)
    return result, context.details


def onnx_outputs(path: Path, model_dir: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    encoded = load_tokenizer(model_dir)(TEXTS, padding=True, return_tensors="np")
    return session.run(None, {i.name: encoded[i.name].astype(np.int64) for i in session.get_inputs()})[0]


def torch_outputs(model_dir: Path) -> np.ndarray:
    task = inspect_model_folder(model_dir).task
    model = load_model(model_dir, task)
    encoded = load_tokenizer(model_dir)(TEXTS, padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in encoded else [])
    with torch.no_grad():
        result = model(**{name: encoded[name] for name in names})
    return (result.last_hidden_state if hasattr(result, "last_hidden_state") else result.logits).numpy()


def relative_error(reference: np.ndarray, result: np.ndarray) -> float:
    return float(np.linalg.norm(result - reference) / np.linalg.norm(reference))


def initializers(path: Path) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in onnx.load(str(path)).graph.initializer}


def decoded(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Original initializer name -> its decoded values, for every codebook-encoded tensor."""
    return {
        name.removesuffix(".indices"): tensors[name.replace(".indices", ".codebook")][indices]
        for name, indices in tensors.items()
        if name.endswith(".indices")
    }


@pytest.mark.parametrize("kind, tensors", [("encoder", 13), ("classifier", 13), ("causal-lm", 9)])
def test_each_tensor_keeps_at_most_2_bits_values_as_uint8_indices(tiny_models, tmp_path, caplog, kind, tensors):
    progress: list[float] = []
    with caplog.at_level(logging.INFO, logger="workers.engine.techniques.cluster"):
        state, details = cluster(tiny_models[kind], tmp_path, progress, bits=3)
    assert state.format == "onnx" and state.torch_model is None
    stored = initializers(state.onnx_path)
    weights = decoded(stored)
    # Every Linear/Conv1D of the body plus the word embeddings; heads and poolers are skipped.
    assert len(weights) == details["tensors_clustered"] == tensors
    for name, values in weights.items():
        assert stored[f"{name}.indices"].dtype == np.uint8 and stored[f"{name}.indices"].shape == values.shape
        assert len(np.unique(values)) <= 8
        assert name not in stored  # the fp32 tensor is gone from the file
    assert details["max_distinct_values"] <= 8 and details["bits"] == 3
    assert details["parameters_clustered"] == sum(values.size for values in weights.values())
    outputs = onnx_outputs(state.onnx_path, tiny_models[kind])
    assert np.isfinite(outputs).all()
    assert relative_error(torch_outputs(tiny_models[kind]), outputs) < 1.0
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert f"{tensors} ONNX tensors" in caplog.text


def test_gpt2_tied_lm_head_stays_fp32_while_the_embeddings_are_clustered(tiny_models, tmp_path):
    state, details = cluster(tiny_models["causal-lm"], tmp_path, bits=4)
    stored = initializers(state.onnx_path)
    graph = onnx.load(str(state.onnx_path)).graph
    [lm_head] = [node for node in graph.node if node.name == "/model/lm_head/MatMul"]
    head = stored[lm_head.input[1]]
    assert head.dtype == np.float32 and len(np.unique(head)) > 16
    original = load_model(tiny_models["causal-lm"], "text-generation").lm_head.weight.detach().numpy()
    np.testing.assert_array_equal(head, original.T)
    embeddings = decoded(stored)["model.transformer.wte.weight"]
    assert embeddings.shape == original.shape and len(np.unique(embeddings)) <= 16
    assert details["weights_untied"] == 1


def test_more_bits_stay_closer_to_the_original(tiny_models, tmp_path):
    model_dir = tiny_models["encoder"]
    reference = torch_outputs(model_dir)
    errors = {}
    for bits in (2, 8):
        state, _ = cluster(model_dir, tmp_path / str(bits), bits=bits, error_compensation=False)
        errors[bits] = relative_error(reference, onnx_outputs(state.onnx_path, model_dir))
    assert errors[8] < 0.05 < errors[2]


def test_error_compensation_beats_plain_kmeans_at_few_bits(tiny_models, tmp_path):
    model_dir = tiny_models["encoder"]
    reference = torch_outputs(model_dir)
    errors = {}
    for compensate in (True, False):
        state, details = cluster(model_dir, tmp_path / str(compensate), bits=4, error_compensation=compensate)
        errors[compensate] = relative_error(reference, onnx_outputs(state.onnx_path, model_dir))
        assert details["error_compensation"] is compensate
    assert errors[True] < 0.8 * errors[False]


def test_skip_patterns_and_embeddings_false_leave_tensors_fp32(tiny_models, tmp_path):
    model_dir = tiny_models["encoder"]
    state, details = cluster(model_dir, tmp_path, bits=4, embeddings=False, skip=[r"\.intermediate\.", r"layer\.1\."])
    stored = initializers(state.onnx_path)
    graph = onnx.load(str(state.onnx_path)).graph
    matmuls = {node.name: node.input[1] for node in graph.node if node.op_type == "MatMul" and node.input[1] in stored}
    for node_name, weight in matmuls.items():
        assert (weight in stored and stored[weight].dtype == np.float32) == (
            "/intermediate/" in node_name or "/layer.1/" in node_name
        ), node_name
    original = load_model(model_dir, "feature-extraction").embeddings.word_embeddings.weight.detach().numpy()
    np.testing.assert_array_equal(stored["model.embeddings.word_embeddings.weight"], original)
    # Layer 0 without its intermediate layer: query, key, value, attention output, output.
    assert details["tensors_clustered"] == 5
    assert sorted(details["layers_clustered"]) == [
        f"encoder.layer.0.{name}"
        for name in ("attention.output.dense", "attention.self.key", "attention.self.query",
                     "attention.self.value", "output.dense")
    ]


def test_error_compensation_needs_texts(tiny_models, tmp_path):
    with pytest.raises(EngineUserError, match="calibration texts"):
        cluster(tiny_models["encoder"], tmp_path, texts=[], bits=4)
    state, details = cluster(tiny_models["encoder"], tmp_path / "plain", texts=[], bits=4, error_compensation=False)
    assert details["tensors_clustered"] == 13 and details["calibration_texts"] == 0


# --- The numerics ---

def test_kmeans_finds_separated_groups_and_keeps_few_values_exact():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(-5, 0.1, 1000), rng.normal(3, 0.1, 3000)]).astype(np.float32)
    centroids, iterations = kmeans_1d(values, 2)
    np.testing.assert_allclose(centroids, [values[:1000].mean(), values[1000:].mean()], rtol=1e-5)
    assert 1 <= iterations < 100
    few = np.array([0.5, -1.0, 0.5, 2.0], np.float32)
    assert kmeans_1d(few, 4)[0].tolist() == [-1.0, 0.5, 2.0]


def test_kmeans_weights_pull_the_centroid():
    values = np.array([0.0, 1.0, 10.0, 11.0], np.float32)
    plain, _ = kmeans_1d(values, 2)
    weighted, _ = kmeans_1d(values, 2, weights=np.array([1.0, 9.0, 1.0, 1.0]))
    assert plain.tolist() == [0.5, 10.5] and weighted.tolist() == pytest.approx([0.9, 10.5])


def test_gptq_rounding_changes_the_outputs_less_than_nearest_rounding():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 64, generator=generator)
    # Correlated inputs, as real activations are: that is what the error compensation exploits.
    inputs = torch.randn(512, 64, generator=generator) @ torch.randn(64, 64, generator=generator)
    hessian = inputs.T @ inputs / inputs.shape[0]
    codebook = torch.from_numpy(kmeans_1d(weight.numpy().reshape(-1), 8)[0])
    nearest = nearest_centroid(weight, codebook)
    compensated = gptq_codebook(weight, hessian, codebook)
    assert set(compensated.unique().tolist()) <= set(codebook.tolist())
    error = lambda rounded: (inputs @ (weight - rounded).T).norm().item()  # noqa: E731
    assert error(compensated) < 0.8 * error(nearest)


# --- Params ---

@pytest.mark.parametrize("bits", [1, 9])
def test_bits_outside_2_to_8_are_rejected(bits):
    with pytest.raises(ValidationError) as caught:
        ClusterConfig(bits=bits)
    [error] = caught.value.errors()
    assert error["loc"] == ("bits",)
    assert ("greater than or equal to 2" if bits == 1 else "less than or equal to 8") in error["msg"]


def test_a_bad_skip_pattern_and_unknown_params_are_named():
    with pytest.raises(ValidationError, match=r"skip pattern 'layer\.\(0' is not a valid regular expression"):
        ClusterConfig(bits=4, skip=["layer.(0"])
    with pytest.raises(ValidationError) as caught:
        ClusterConfig(bits=4, clusters=16)
    assert caught.value.errors()[0]["type"] == "extra_forbidden"
    with pytest.raises(ValidationError):
        ClusterConfig(bits="4")  # strict: a string is not a number


def test_config_round_trips_and_declares_its_formats():
    config = ClusterConfig(bits=4)
    assert ClusterConfig.model_validate(config.model_dump(mode="json")) == config
    assert (ClusterConfig.input_format, ClusterConfig.output_format) == ("torch", "onnx")
    assert ClusterConfig.requires_data and ClusterConfig.technique == "cluster"


def test_embedding_bits_apply_to_the_word_embeddings_only(tiny_models, tmp_path):
    state, details = cluster(tiny_models["encoder"], tmp_path, bits=4, embedding_bits=2)
    weights = decoded(initializers(state.onnx_path))
    [embedding] = [name for name in weights if "word_embeddings" in name]
    assert len(np.unique(weights[embedding])) <= 4
    assert max(len(np.unique(values)) for name, values in weights.items() if name != embedding) > 4
    assert details["embedding_bits"] == 2 and details["bits"] == 4
