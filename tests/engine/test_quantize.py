"""The quantize handler on its own: ONNX export, weight counting, and layer groups kept in fp32."""

from pathlib import Path

import onnx
import pytest

from workers.engine.errors import EngineUserError
from workers.engine.export.onnx import count_onnx_parameters
from workers.engine.loading import load_model, load_tokenizer
from workers.engine.state import ModelState, StepContext
from workers.engine.techniques.quantize import QuantizeConfig
from workers.engine.techniques.quantize.handler import apply_quantize

TASK_BY_KIND = {"encoder": "feature-extraction", "classifier": "text-classification", "causal-lm": "text-generation"}


def quantize(model_dir: Path, kind: str, work_dir: Path, **params) -> tuple[ModelState, ModelState]:
    task = TASK_BY_KIND[kind]
    model = load_model(model_dir, task)
    state = ModelState(task=task, config_dir=model_dir, torch_model=model)
    context = StepContext(work_dir=work_dir, device="cpu", tokenizer=load_tokenizer(model_dir), sequence_length=128)
    return state, apply_quantize(QuantizeConfig(scheme="int8_dynamic", **params), state, context)


def float_matmuls_of(path: Path) -> set[str]:
    """Names of MatMul/Gemm nodes that still multiply by an fp32 weight."""
    model = onnx.load(str(path))
    floats = {init.name for init in model.graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    return {
        node.name for node in model.graph.node
        if node.op_type in ("MatMul", "Gemm") and any(name in floats for name in node.input)
    }


def test_parameter_count_ignores_scales_and_matches_torch(tiny_models, tmp_path):
    before, after = quantize(tiny_models["classifier"], "classifier", tmp_path)
    assert after.format == "onnx" and after.torch_model is None
    fp32 = count_onnx_parameters(onnx.load(str(tmp_path / "model_fp32.onnx")))
    int8 = count_onnx_parameters(onnx.load(str(after.onnx_path)))
    # Quantizing changes how weights are stored, not how many there are. The export may store
    # equal tensors once (fresh LayerNorm weights are all ones), hence at most the torch count.
    assert fp32 == int8
    assert 0.9 * sum(p.numel() for p in before.torch_model.parameters()) < fp32 <= sum(
        p.numel() for p in before.torch_model.parameters()
    )


@pytest.mark.parametrize("kind, node_fragment", [("encoder", "/output/dense/"), ("causal-lm", "/mlp/c_proj/")])
def test_keep_fp32_leaves_the_ffn_output_unquantized(tiny_models, tmp_path, kind, node_fragment):
    _, default = quantize(tiny_models[kind], kind, tmp_path / "default")
    _, kept = quantize(tiny_models[kind], kind, tmp_path / "kept", keep_fp32=["ffn_output"])
    assert float_matmuls_of(default.onnx_path) == set()
    kept_nodes = float_matmuls_of(kept.onnx_path)
    assert len(kept_nodes) == 2  # one per layer of the tiny models
    assert all(node_fragment in name and "attention" not in name for name in kept_nodes)
    assert kept.onnx_path.stat().st_size > default.onnx_path.stat().st_size


def test_keep_fp32_on_an_unmapped_architecture_is_a_user_error(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setattr("workers.engine.techniques.quantize.layers.layer_group_pattern", lambda model_type, group: None)
    with pytest.raises(EngineUserError, match="not mapped for model_type 'bert'"):
        quantize(tiny_models["encoder"], "encoder", tmp_path, keep_fp32=["ffn_input"])


# --- schemes, layer selection and the accuracy-aware mode ---------------------------------------

CALIBRATION_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back when you have a minute.",
    "The central bank left interest rates unchanged this year.",
    "Our team won the game after a long and difficult season.",
    "Where is the nearest train station, and how far is it?",
    "This phone is great, but the battery life could be better.",
]
SCHEMES = ["int8_dynamic", "int8_weight_only", "int4_weight_only", "int8_static", "fp16", "bf16"]


def run_scheme(
    model_dir: Path, kind: str, work_dir: Path, texts: list[str] = CALIBRATION_TEXTS, **params
) -> tuple[ModelState, StepContext]:
    task = TASK_BY_KIND[kind]
    context = StepContext(
        work_dir=work_dir, device="cpu", tokenizer=load_tokenizer(model_dir), sequence_length=64,
        calibration_texts=texts,
    )
    state = ModelState(task=task, config_dir=model_dir, torch_model=load_model(model_dir, task))
    return apply_quantize(QuantizeConfig(**params), state, context), context


def initializer_types(path: Path) -> dict[str, int]:
    return {init.name: init.data_type for init in onnx.load(str(path)).graph.initializer}


def node_weight_types(path: Path) -> dict[str, set[int]]:
    """For each MatMul/Gather, the dtypes of the initializers it reads (directly or through a Cast/DequantizeLinear)."""
    model = onnx.load(str(path))
    types = initializer_types(path)
    produced = {output: node for node in model.graph.node for output in node.output}
    result = {}
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gather"):
            continue
        found = set()
        for name in node.input:
            source = produced.get(name)
            if source is not None and source.op_type in ("Cast", "DequantizeLinear"):
                name = source.input[0]
            if name in types:
                found.add(types[name])
        result[node.name] = found
    return result


# Every scheme on the encoder; the other kinds only where they take another code path: GPT-2's
# Conv1D exports as Gemm (rewritten to MatMul) and the classifier's metric is top-1 agreement. Their
# int8_dynamic/int8_static/int4 graphs are also built by the skip test below.
SCHEME_CASES = [(scheme, "encoder") for scheme in SCHEMES] + [("bf16", "causal-lm"), ("int8_static", "classifier")]


@pytest.mark.parametrize("scheme, kind", SCHEME_CASES)
def test_every_scheme_runs_is_smaller_and_stays_close(tiny_models, tmp_path, scheme, kind):
    import numpy as np

    from workers.engine.evaluation.calibration import FidelityProbe, calibration_batches
    from workers.engine.loading import model_input_names

    model_dir = tiny_models[kind]
    state, context = run_scheme(model_dir, kind, tmp_path, scheme=scheme)
    assert state.format == "onnx" and context.details["scheme"] == scheme
    assert context.details["layers_quantized"] > 0 and context.details["embeddings_quantized"]
    assert state.onnx_path.stat().st_size < (tmp_path / "model_fp32.onnx").stat().st_size
    model = load_model(model_dir, TASK_BY_KIND[kind])
    tokenizer = load_tokenizer(model_dir)
    batches = calibration_batches(tokenizer, CALIBRATION_TEXTS, 64, model_input_names(model, tokenizer))
    fidelity = FidelityProbe(model, TASK_BY_KIND[kind], batches, tmp_path / "probe")(state.onnx_path)
    assert np.isfinite(fidelity)
    # Random tiny models are harder to quantize than trained ones; these floors catch a broken
    # graph (cosine ~0, random agreement), not small losses.
    floor = {"feature-extraction": 0.9, "text-classification": 0.5, "text-generation": 0.5}[TASK_BY_KIND[kind]]
    assert floor <= fidelity <= 1.0 + 1e-6


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_int8_static_calibrates_on_batches_of_different_lengths(tiny_models, tmp_path, method):
    # More texts than one calibration batch holds, the later ones longer: onnxruntime's histogram
    # calibrators (percentile, entropy) stack every batch's activations and fail on unequal shapes
    # unless fed one batch at a time.
    texts = CALIBRATION_TEXTS * 3 + [" ".join(CALIBRATION_TEXTS)] * 4
    quantized, context = run_scheme(
        tiny_models["encoder"], "encoder", tmp_path, texts, scheme="int8_static", calibration_method=method
    )
    assert context.details["layers_quantized"] > 0
    assert float_matmuls_of(quantized.onnx_path) == set()


@pytest.mark.parametrize(
    "scheme, weight_type",
    [("int8_weight_only", onnx.TensorProto.INT8), ("bf16", onnx.TensorProto.BFLOAT16)],
)
def test_modules_and_skip_choose_the_quantized_nodes(tiny_models, tmp_path, scheme, weight_type):
    state, context = run_scheme(
        tiny_models["encoder"], "encoder", tmp_path, scheme=scheme, modules=[r"encoder\.layer\.1\."],
        skip=[r"attention\.self\.key"],
    )
    weights = node_weight_types(state.onnx_path)
    quantized = {name for name, types in weights.items() if weight_type in types}
    assert quantized == {
        f"/model/encoder/layer.1/{path}/MatMul"
        for path in ("attention/self/query", "attention/self/value", "attention/output/dense", "intermediate/dense",
                     "output/dense")
    }
    assert context.details["layers_quantized"] == 5
    assert "encoder.layer.1.attention.self.key" in context.details["left_layers"]
    assert not context.details["embeddings_quantized"]  # the embeddings do not match `modules`


@pytest.mark.parametrize("scheme", ["int8_dynamic", "int8_static", "int4_weight_only"])
def test_skip_keeps_fp32_matmuls_in_the_calibrated_and_4bit_schemes(tiny_models, tmp_path, scheme):
    state, _ = run_scheme(tiny_models["causal-lm"], "causal-lm", tmp_path, scheme=scheme, skip=[r"mlp\.c_proj$"])
    assert float_matmuls_of(state.onnx_path) == {
        "/model/transformer/h.0/mlp/c_proj/Gemm_MatMul", "/model/transformer/h.1/mlp/c_proj/Gemm_MatMul"
    }


@pytest.mark.parametrize(
    "scheme, quantized_type",
    [("int8_dynamic", onnx.TensorProto.INT8), ("int4_weight_only", onnx.TensorProto.UINT4)],
)
def test_embeddings_flag_sets_the_gather_table_dtype(tiny_models, tmp_path, scheme, quantized_type):
    table = "model.embeddings.word_embeddings.weight"
    on, _ = run_scheme(tiny_models["encoder"], "encoder", tmp_path / "on", scheme=scheme)
    off, context = run_scheme(tiny_models["encoder"], "encoder", tmp_path / "off", scheme=scheme, embeddings=False)
    on_types = {name: dtype for name, dtype in initializer_types(on.onnx_path).items() if name.startswith(table)}
    off_types = {name: dtype for name, dtype in initializer_types(off.onnx_path).items() if name.startswith(table)}
    # The fp32 table is gone; scales may stay fp32.
    assert table not in on_types and quantized_type in on_types.values()
    assert off_types == {table: onnx.TensorProto.FLOAT}
    assert not context.details["embeddings_quantized"]


def test_target_fidelity_falls_back_the_most_sensitive_layers(tiny_models, tmp_path):
    state, context = run_scheme(
        tiny_models["encoder"], "encoder", tmp_path, scheme="int4_weight_only", group_size=16,
        target_fidelity=1.0, max_size_ratio=1.0,
    )
    details = context.details
    # A target of exactly 1 cannot hold while anything is quantized, so layers fall back until none helps.
    assert details["fallback_layers"] and details["target_met"] is False
    assert 0.9 < details["calibration_fidelity"] <= 1.0
    assert set(details["fallback_layers"]) <= set(details["left_layers"])
    assert len(float_matmuls_of(state.onnx_path)) == len(details["fallback_layers"])


def test_a_search_measures_the_fallback_s_layer_sensitivities_once(tiny_models, tmp_path):
    from workers.engine.reuse import ReuseCache

    reuse = ReuseCache(tmp_path / "reuse")
    params = {"scheme": "int4_weight_only", "group_size": 16, "max_size_ratio": 1.0}
    # A search's candidates: the same quantization with different targets, each on the original.
    runs = []
    for number, target in enumerate((1.0, 0.999)):
        model_dir = tiny_models["encoder"]
        (tmp_path / str(number)).mkdir()
        context = StepContext(
            work_dir=tmp_path / str(number), device="cpu", tokenizer=load_tokenizer(model_dir), sequence_length=64,
            calibration_texts=CALIBRATION_TEXTS, reuse=reuse,
        )
        state = ModelState(task="feature-extraction", config_dir=model_dir,
                           torch_model=load_model(model_dir, "feature-extraction"))
        apply_quantize(QuantizeConfig(**params, target_fidelity=target), state, context)
        runs.append(context.details)
    first, second = runs
    assert reuse.hits["fallback_sensitivities"] == 1
    # The second run builds the fully quantized model and its greedy steps, not one model per examined
    # layer again: the tiny encoder's 12 Linear layers (2 layers of 6; embeddings never fall back).
    examined = first["layers_quantized"] + len(first["fallback_layers"]) - 3
    assert examined == 12 and first["fallback_trials"] - second["fallback_trials"] >= examined
    # Same gains, same greedy order: the lower target stops earlier on the same path.
    assert second["fallback_layers"] == first["fallback_layers"][: len(second["fallback_layers"])]


def test_target_fidelity_that_already_holds_keeps_everything_quantized(tiny_models, tmp_path):
    state, context = run_scheme(tiny_models["encoder"], "encoder", tmp_path, scheme="int8_dynamic", target_fidelity=0.5)
    assert context.details["target_met"] is True and context.details["fallback_layers"] == []
    assert float_matmuls_of(state.onnx_path) == set()


def test_old_recipes_keep_their_meaning():
    config = QuantizeConfig.model_validate({"scheme": "int8_dynamic", "per_channel": False, "keep_fp32": ["ffn_output"]})
    assert config.embeddings and config.modules is None and config.skip == []
    assert QuantizeConfig.version == 1


@pytest.mark.parametrize(
    "params, message",
    [
        ({"scheme": "int8_dynamic", "group_size": 32}, "group_size only applies to scheme int4_weight_only"),
        ({"scheme": "int4_weight_only", "group_size": 48}, "power of two from 16 to 256"),
        ({"scheme": "int4_weight_only", "group_size": 512}, "power of two from 16 to 256"),
        ({"scheme": "fp16", "per_channel": False}, "per_channel only applies"),  # True is the default: stored recipes list it
        ({"scheme": "int8_dynamic", "calibration_method": "entropy"}, "calibration_method only applies"),
        ({"scheme": "bf16", "target_fidelity": 0.99}, "target_fidelity only applies"),
        ({"scheme": "int8_dynamic", "max_size_ratio": 0.3}, "give target_fidelity too"),
        ({"scheme": "int8_dynamic", "skip": ["("]}, "not a valid regular expression"),
        ({"scheme": "int8_dynamic", "fallback": "weight_only"}, "fallback only applies with target_fidelity"),
        ({"scheme": "int4_weight_only", "target_fidelity": 0.99, "fallback": "weight_only"},
         "use fallback 'fp32'"),
        ({"scheme": "int8_dynamic", "target_fidelity": 0.99, "fallback": "weight_only", "max_size_ratio": 0.3},
         "weight_only costs no size"),
        ({"scheme": "fp16", "smooth_alpha": 0.5}, "smooth_alpha only applies to scheme int8_dynamic or int8_static"),
        ({"scheme": "int8_dynamic", "smooth_alpha": 1.0}, "less than 1"),
        ({"scheme": "int2"}, "Input should be"),
        ({"scheme": "int8_static", "outlier_channels": 8}, "outlier_channels only applies to scheme int8_dynamic"),
        ({"scheme": "int8_dynamic", "outlier_channels": -1}, "greater than or equal to 0"),
    ],
)
def test_bad_params_are_refused_with_a_clear_message(params, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        QuantizeConfig.model_validate(params)


def test_a_pattern_that_matches_no_layer_is_a_user_error(tiny_models, tmp_path):
    with pytest.raises(EngineUserError, match="matches no layer of this model; layers are named like"):
        run_scheme(tiny_models["encoder"], "encoder", tmp_path, scheme="fp16", modules=["decoder"])


# --- smoothing and the weight-only fallback -------------------------------------------------------


@pytest.mark.parametrize("kind", ["encoder", "causal-lm"])
def test_smoothing_leaves_the_torch_outputs_unchanged(tiny_models, kind):
    import torch

    from workers.engine.evaluation.calibration import calibration_batches
    from workers.engine.loading import model_input_names
    from workers.engine.techniques.quantize.smoothing import smooth_model

    model = load_model(tiny_models[kind], TASK_BY_KIND[kind])
    tokenizer = load_tokenizer(tiny_models[kind])
    batches = calibration_batches(tokenizer, CALIBRATION_TEXTS, 64, model_input_names(model, tokenizer))
    names = [name for name, module in model.named_modules() if name.endswith(("query", "key", "value", "c_attn",
                                                                                "c_proj", "intermediate.dense"))]
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    smoothed, shrink = smooth_model(model, names, batches, alpha=0.5)
    inputs = {name: torch.from_numpy(value) for name, value in batches[0].items()}
    with torch.no_grad():
        expected, actual = model(**inputs)[0], smoothed(**inputs)[0]
    assert torch.allclose(expected, actual, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    # The original stays the fidelity reference: untouched, and GPT-2's tied embeddings with it.
    assert all(torch.equal(tensor, model.state_dict()[name]) for name, tensor in before.items())
    changed = [name for name in names if not torch.equal(smoothed.get_submodule(name).weight,
                                                          model.get_submodule(name).weight)]
    assert changed == names and set(shrink) == set(names) and all(value >= 1.0 - 1e-6 for value in shrink.values())


def test_layers_reading_one_input_share_one_smoothing_scale(tiny_models):
    from workers.engine.evaluation.calibration import calibration_batches
    from workers.engine.loading import model_input_names
    from workers.engine.techniques.quantize.smoothing import activation_peaks

    model = load_model(tiny_models["encoder"], "feature-extraction")
    tokenizer = load_tokenizer(tiny_models["encoder"])
    batches = calibration_batches(tokenizer, CALIBRATION_TEXTS, 64, model_input_names(model, tokenizer))
    names = [f"encoder.layer.{index}.{path}" for index in (0, 1) for path in (
        "attention.self.query", "attention.self.key", "attention.self.value", "intermediate.dense", "output.dense")]
    peaks, groups = activation_peaks(model, names, batches)
    assert sorted(map(sorted, groups)) == sorted(
        [sorted(names[index:index + 3]) for index in (0, 5)] + [[name] for name in names if "self" not in name]
    )
    assert all(peaks[name].shape == (model.get_submodule(name).in_features,) for name in names)


def test_weight_only_fallback_keeps_int8_weights_and_the_size(tiny_models, tmp_path):
    plain, _ = run_scheme(tiny_models["encoder"], "encoder", tmp_path / "plain", scheme="int8_dynamic")
    state, context = run_scheme(
        tiny_models["encoder"], "encoder", tmp_path / "fallback", scheme="int8_dynamic", smooth_alpha=0.5,
        target_fidelity=1.0, fallback="weight_only",
    )
    details = context.details
    assert details["smoothed_layers"] == 10  # every MatMul of the 2 layers but the FFN outputs
    # A target of exactly 1 cannot hold, so layers fall back until none helps; none is left in fp32.
    assert details["fallback"] == "weight_only" and details["fallback_layers"] and details["target_met"] is False
    assert float_matmuls_of(state.onnx_path) == set()
    assert details["layers_quantized"] == 12 + 3 and details["layers_left"] == 0
    weights = node_weight_types(state.onnx_path)
    weight_only = {name for name, types in weights.items() if onnx.TensorProto.INT8 in types and "Gather" not in name}
    assert {module_path(name) for name in weight_only} == set(details["fallback_layers"])
    # The smoothing Mul and the shared input scale add a few bytes, falling back to weight-only none.
    assert abs(state.onnx_path.stat().st_size - plain.onnx_path.stat().st_size) < 0.02 * plain.onnx_path.stat().st_size


def module_path(node_name: str) -> str:
    from workers.engine.techniques.quantize.layers import module_name

    return module_name(node_name)


# --- outlier channels computed apart -------------------------------------------------------------


def _with_an_outlier_channel(model_dir: Path, destination: Path, factor: float = 50.0) -> Path:
    """A copy whose first FFN has one neuron `factor` times larger, and its output weights `factor`
    times smaller: the same function, with one activation channel far above the others, as trained
    transformers have."""
    import shutil

    import torch

    shutil.copytree(model_dir, destination)
    model = load_model(destination, "feature-extraction")
    with torch.no_grad():
        layer = model.encoder.layer[0]
        # GELU is not homogeneous, so scale the FFN's output side only for a positive-slope neuron:
        # take the pre-activation well above zero with the bias, where GELU(x) ~ x.
        layer.intermediate.dense.bias[3] = 4.0
        layer.intermediate.dense.weight[3] *= factor / 4.0
        layer.intermediate.dense.bias[3] = 4.0 * factor
        layer.output.dense.weight[:, 3] /= factor
    model.save_pretrained(destination, safe_serialization=True)
    return destination


def test_splitting_outlier_channels_is_exact_in_fp32(tiny_models, tmp_path):
    import numpy as np

    from workers.engine.evaluation.calibration import calibration_batches
    from workers.engine.evaluation.runners import OnnxRunner
    from workers.engine.export.onnx import export_onnx
    from workers.engine.loading import model_input_names
    from workers.engine.techniques.quantize.layers import prepare_graph, weight_layers
    from workers.engine.techniques.quantize.outliers import input_peaks, split_outlier_channels

    model_dir = _with_an_outlier_channel(tiny_models["encoder"], tmp_path / "model")
    model, tokenizer = load_model(model_dir, "feature-extraction"), load_tokenizer(model_dir)
    names = model_input_names(model, tokenizer)
    prepared = prepare_graph(export_onnx(model, "feature-extraction", names, tmp_path / "fp32.onnx"), tmp_path / "p.onnx")
    graph = onnx.load(str(prepared))
    matmuls = [layer for layer in weight_layers(graph) if not layer.is_embedding]
    batches = calibration_batches(tokenizer, CALIBRATION_TEXTS, 64, names)
    peaks = input_peaks(graph, matmuls, batches)
    ffn_output = next(layer for layer in matmuls if "layer.0/output/dense" in layer.node)
    assert int(np.argmax(peaks[ffn_output.node])) == 3  # the planted outlier is found from the graph

    side_nodes = split_outlier_channels(graph, matmuls, peaks, 2)
    assert len(side_nodes) == len(matmuls)
    split = tmp_path / "split.onnx"
    onnx.save(graph, str(split))
    before, after = OnnxRunner(prepared, "cpu"), OnnxRunner(split, "cpu")
    for batch in batches:
        np.testing.assert_allclose(after(batch), before(batch), rtol=1e-4, atol=1e-4)


def test_outlier_channels_restore_the_fidelity_an_outlier_costs_int8(tiny_models, tmp_path):
    from workers.engine.evaluation.calibration import FidelityProbe, calibration_batches
    from workers.engine.loading import model_input_names

    model_dir = _with_an_outlier_channel(tiny_models["encoder"], tmp_path / "model")
    plain, _ = run_scheme(model_dir, "encoder", tmp_path / "plain", scheme="int8_dynamic")
    state, context = run_scheme(model_dir, "encoder", tmp_path / "apart", scheme="int8_dynamic", outlier_channels=2)
    assert context.details["outlier_channels"] == 2 and context.details["outlier_split_layers"] == 12
    # Only the side MatMuls (2 rows of weights each) stay fp32; every other MatMul is int8.
    assert float_matmuls_of(state.onnx_path) == {node for node in float_matmuls_of(state.onnx_path) if node.endswith("_outliers")}
    assert len(float_matmuls_of(state.onnx_path)) == 12
    model, tokenizer = load_model(model_dir, "feature-extraction"), load_tokenizer(model_dir)
    batches = calibration_batches(tokenizer, CALIBRATION_TEXTS, 64, model_input_names(model, tokenizer))
    probe = FidelityProbe(model, "feature-extraction", batches, tmp_path / "probe")
    plain_fidelity, apart_fidelity = probe(plain.onnx_path), probe(state.onnx_path)
    assert apart_fidelity > plain_fidelity + 0.01, (plain_fidelity, apart_fidelity)
    # The bytes added are the side weights, the masks and the channel indices, plus four nodes per
    # layer (with their long names, ~1.7 kB a layer: a lot next to a tiny model, nothing next to MiniLM's 23 MB).
    import numpy as np
    from onnx import numpy_helper

    added = sum(
        numpy_helper.to_array(init).nbytes for init in onnx.load(str(state.onnx_path)).graph.initializer
        if init.name.endswith(("_keep", "_outlier_channels", "_outlier_weight"))
    )
    assert added > 0
    assert state.onnx_path.stat().st_size - plain.onnx_path.stat().st_size < added + 12 * 2048
    assert np.isfinite(apart_fidelity)


def test_outliers_fallback_splits_only_the_layers_it_picks(tiny_models, tmp_path):
    model_dir = _with_an_outlier_channel(tiny_models["encoder"], tmp_path / "model")
    # A target that already holds: the fidelity of every layer quantized, measured the same way.
    _, plain = run_scheme(model_dir, "encoder", tmp_path / "plain", scheme="int8_dynamic", target_fidelity=0.5)
    state, context = run_scheme(
        model_dir, "encoder", tmp_path / "apart", scheme="int8_dynamic", target_fidelity=1.0, fallback="outliers",
        outlier_channels=2,
    )
    details = context.details
    # A target of exactly 1 cannot hold, so layers are split until none helps.
    assert details["fallback"] == "outliers" and details["target_met"] is False and details["outlier_channels"] == 2
    assert details["fallback_layers"] and details["fallback_trials"] > 1 + len(details["fallback_layers"])
    assert details["calibration_fidelity"] > plain.details["calibration_fidelity"] + 0.01
    # Split layers stay int8: the only fp32 MatMuls are the side MatMuls of the layers picked.
    side = float_matmuls_of(state.onnx_path)
    assert {module_path(name.removesuffix("_outliers")) for name in side} == set(details["fallback_layers"])
    assert details["layers_quantized"] == 12 + 3 and details["layers_left"] == 0

