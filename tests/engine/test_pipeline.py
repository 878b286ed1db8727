"""The pipeline end to end on the three tiny models: report, package, and an independent re-check."""

import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from tests.engine.conftest import FAST_EVAL, LABELLED_ROWS, QUANTIZE_RECIPE
from tests.factories import CLASSIFIER_LABELS, TINY_KINDS
from workers.engine.errors import EngineUserError
from workers.engine.evaluation.data import BUILTIN_SAMPLE_PATH
from workers.engine.package import write_zip
from workers.engine.pipeline import PipelineRequest, run_pipeline
from workers.engine.recipe import Recipe
from workers.engine.techniques.quantize import QuantizeConfig
from workers.engine.report import Report
from workers.engine.stages import stage_phase

EXPECTED_METRICS = {
    "encoder": {"cosine_mean", "cosine_p5"},
    "classifier": {"top1_agreement", "kl_mean"},
    "causal-lm": {"token_top1_agreement", "token_kl_mean"},
}


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_report_is_complete_and_sensible(pipeline_runs, kind):
    run = pipeline_runs[kind]
    report = run.result.report
    Report.model_validate(report)  # matches the published schema
    assert report["schema_version"] == 1
    assert json.loads(run.result.report_path.read_text()) == report

    original, result = report["original"], report["result"]
    assert (original["format"], original["runtime"]) == ("safetensors", "pytorch")
    assert (result["format"], result["runtime"]) == ("onnx", "onnxruntime")
    for side in (original, result):
        assert side["size_bytes"] > 0 and side["total_size_bytes"] >= side["size_bytes"]
        assert side["num_parameters"] > 10_000
        latency = side["latency"]
        assert latency["sequence_length"] == 128 and latency["device"] == "cpu" and latency["threads"] >= 1
        for key in ("batch_1", "batch_32"):
            assert 0 < latency[key]["p50_ms"] <= latency[key]["p95_ms"]
            assert latency[key]["runs"] == FAST_EVAL["latency_repeats"]
    assert original["latency"]["runtime"] == "pytorch" and result["latency"]["runtime"] == "onnxruntime"

    ratios = report["ratios"]
    assert ratios["compression_ratio"] == pytest.approx(original["size_bytes"] / result["size_bytes"])
    assert ratios["size_fraction"] == pytest.approx(1 / ratios["compression_ratio"])
    assert set(ratios["speedup"]) == {"batch_1", "batch_32"}

    fidelity = report["fidelity"]
    assert set(fidelity["metrics"]) == EXPECTED_METRICS[kind]
    primary = fidelity["metrics"][fidelity["primary_metric"]]
    assert 0.0 <= primary <= 1.0
    assert fidelity["num_samples"] == report["evaluation"]["num_samples"] > 0

    [step] = report["steps"]
    assert step["technique"] == "quantize" and step["version"] == 1
    assert step["params"] == QuantizeConfig(scheme="int8_dynamic").model_dump(mode="json")
    assert step["wall_time_s"] > 0 and step["size_bytes_after"] == result["size_bytes"]
    # The step's own before/after entry: sizes, parameters and fidelity on the first rows.
    assert step["format_after"] == "onnx"
    # The tensors alone, without the safetensors header.
    assert 0 < step["size_bytes_before"] <= report["original"]["size_bytes"]
    assert 0 < step["parameters_before"] <= report["original"]["num_parameters"]  # buffers are not parameters
    assert step["parameters_after"] == result["num_parameters"]
    step_fidelity = step["fidelity_after"]
    assert step_fidelity["primary_metric"] == fidelity["primary_metric"]
    assert 0 < step_fidelity["num_samples"] <= fidelity["num_samples"]
    # The packaged file is the step's output, so the probe's rows agree with the full evaluation's
    # when they are the same rows.
    if step_fidelity["num_samples"] == fidelity["num_samples"]:
        assert step_fidelity["metrics"][fidelity["primary_metric"]] == pytest.approx(primary, abs=1e-6)
    assert report["job"]["recipe"] == Recipe.from_dict(QUANTIZE_RECIPE).to_dict()
    assert report["job"]["device"] == "cpu" and report["job"]["wall_time_s"] > 0
    assert set(report["environment"]) >= {"python", "torch", "transformers", "onnx", "onnxruntime", "numpy"}
    assert report["evaluation"]["dataset_source"] == ("uploaded" if kind == "classifier" else "builtin")
    _check_footprint(report)


def _check_footprint(report: dict) -> None:
    """Water and embodied impact cover the same stages as the energy, and sum to their totals."""
    energy, water, embodied = report["energy"], report["water"], report["embodied"]
    stages = [stage["stage"] for stage in energy["stages"]]
    assert [stage["stage"] for stage in water["stages"]] == stages == [stage["stage"] for stage in embodied["stages"]]
    assert water["method"] == energy["method"] and embodied["method"] == "estimated"
    assert water["total"]["water_l"] == pytest.approx(sum(stage["water_l"] for stage in water["stages"]))
    assert water["total"]["water_l"] > 0 and water["worker"]["wue_l_per_kwh"] == 1.8
    assert embodied["total"]["gwp_g"] == pytest.approx(sum(stage["gwp_g"] for stage in embodied["stages"]))
    assert embodied["total"]["duration_s"] == pytest.approx(energy["total"]["duration_s"])
    assert {c["component"] for c in embodied["inputs"]["components"]} == {"cpu", "ram"}
    assert embodied["inference"]["components"] == ["cpu", "ram"]
    for side in ("original", "result"):
        assert water["inference"][side]["water_l"] > 0 and embodied["inference"][side]["gwp_g"] > 0
    assert water["payback"]["unit"] == "L of water" and embodied["payback"]["unit"] == "g CO2e embodied"


def test_encoder_and_lm_have_no_quality_and_lm_counts_tokens(pipeline_runs):
    for kind in ("encoder", "causal-lm"):
        report = pipeline_runs[kind].result.report
        assert report["original"]["quality"] is None and report["result"]["quality"] is None
    lm = pipeline_runs["causal-lm"].result.report["fidelity"]
    assert lm["num_tokens"] > lm["num_samples"]


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_package_holds_a_single_int8_onnx_file_and_the_tokenizer(pipeline_runs, kind, tmp_path):
    run = pipeline_runs[kind]
    with zipfile.ZipFile(run.result.model_zip) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path)
    assert names == sorted(names)
    report = run.result.report
    assert sorted(item["path"] for item in report["files"]) == names
    assert {"model.onnx", "config.json", "report.json", "tokenizer.json", "tokenizer_config.json"} <= set(names)
    runtimes = {item["path"]: item["runtime"] for item in report["files"]}
    assert runtimes["model.onnx"] == "onnxruntime" and runtimes["tokenizer.json"] == "any"
    assert json.loads((tmp_path / "report.json").read_text()) == report

    model = onnx.load(str(tmp_path / "model.onnx"))
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    assert any(init.data_type == onnx.TensorProto.INT8 for init in model.graph.initializer)
    assert (tmp_path / "model.onnx").stat().st_size == report["result"]["size_bytes"]


def test_zip_is_deterministic(pipeline_runs, tmp_path):
    package_dir = pipeline_runs["encoder"].output_dir.parent / "work" / "package"
    first = write_zip(package_dir, tmp_path / "a.zip").read_bytes()
    second = write_zip(package_dir, tmp_path / "b.zip").read_bytes()
    assert first == second


def test_progress_is_monotonic_and_covers_every_phase(pipeline_runs):
    progress = pipeline_runs["encoder"].progress
    fractions = [fraction for _, fraction in progress]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and progress[-1] == ("done", 1.0)
    stages = {stage for stage, _ in progress}
    assert {
        "load", "evaluate_original.outputs", "evaluate_original.latency", "step_1.quantize", "package",
        "evaluate_result.outputs", "evaluate_result.latency", "report",
    } <= stages
    # The job page derives each step's state from the phase of the stage; the phases must run in order.
    phases = [stage_phase(stage) for stage, _ in progress]
    order = ["before_steps", "step", "after_steps"]
    assert [order.index(phase) for phase in phases] == sorted(order.index(phase) for phase in phases)
    assert set(phases) == set(order)


def test_accuracy_and_f1_on_a_labelled_dataset(pipeline_runs):
    report = pipeline_runs["classifier"].result.report
    for side in ("original", "result"):
        quality = report[side]["quality"]
        assert quality["num_labelled"] == len([row for row in LABELLED_ROWS if "label" in row])
        assert 0.0 <= quality["accuracy"] <= 1.0 and 0.0 <= quality["macro_f1"] <= 1.0


# --- The independent check: plain onnxruntime on the zipped file against plain transformers. ---

AUTO_BY_KIND = {
    "encoder": AutoModel, "classifier": AutoModelForSequenceClassification, "causal-lm": AutoModelForCausalLM,
}


def _texts(kind: str, count: int) -> list[str]:
    if kind == "classifier":
        return [row["text"] for row in LABELLED_ROWS][:count]
    lines = [line.strip() for line in BUILTIN_SAMPLE_PATH.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line][:count]


def _softmax_stats(ref: np.ndarray, res: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, res = ref.astype(np.float64), res.astype(np.float64)
    log_p = ref - ref.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    log_q = res - res.max(-1, keepdims=True)
    log_q -= np.log(np.exp(log_q).sum(-1, keepdims=True))
    return ref.argmax(-1) == res.argmax(-1), (np.exp(log_p) * (log_p - log_q)).sum(-1)


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_independent_check_of_the_zipped_model_matches_the_report(pipeline_runs, kind, tmp_path):
    run = pipeline_runs[kind]
    report = run.result.report
    with zipfile.ZipFile(run.result.model_zip) as archive:
        archive.extractall(tmp_path)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    original = AUTO_BY_KIND[kind].from_pretrained(run.model_dir).eval()
    output = "last_hidden_state" if kind == "encoder" else "logits"

    evaluation = report["evaluation"]
    texts = _texts(kind, evaluation["num_samples"])
    per_item: list[np.ndarray] = []
    agree_parts, kl_parts, references = [], [], []
    for start in range(0, len(texts), evaluation["batch_size"]):
        encoded = tokenizer(
            texts[start : start + evaluation["batch_size"]], padding=True, truncation=True,
            max_length=evaluation["sequence_length"], return_tensors="np",
        )
        feeds = {item.name: encoded[item.name].astype(np.int64) for item in session.get_inputs()}
        result = session.run(None, feeds)[0]
        with torch.no_grad():
            reference = getattr(original(**{k: torch.from_numpy(v) for k, v in feeds.items()}), output).numpy()
        mask = encoded["attention_mask"].astype(bool)
        if kind == "encoder":
            weights = mask[..., None].astype(np.float64)
            ref = (reference * weights).sum(1) / weights.sum(1)
            res = (result * weights).sum(1) / weights.sum(1)
            per_item.append((ref * res).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(res, axis=1))
        else:
            ref, res = (reference[mask], result[mask]) if kind == "causal-lm" else (reference, result)
            agree, kl = _softmax_stats(ref, res)
            agree_parts.append(agree)
            kl_parts.append(kl)
            references.append(ref)

    metrics = report["fidelity"]["metrics"]
    if kind == "encoder":
        cosines = np.concatenate(per_item)
        expected = {"cosine_mean": cosines.mean(), "cosine_p5": np.percentile(cosines, 5)}
    else:
        prefix = "token_" if kind == "causal-lm" else ""
        agree, kl = np.concatenate(agree_parts), np.concatenate(kl_parts)
        expected = {f"{prefix}top1_agreement": agree.mean(), f"{prefix}kl_mean": kl.mean()}
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-4), name

    if kind == "classifier":
        labelled = [index for index, row in enumerate(LABELLED_ROWS) if "label" in row]
        label_ids = [
            CLASSIFIER_LABELS.index(label) if isinstance(label, str) else label
            for label in (LABELLED_ROWS[index]["label"] for index in labelled)
        ]
        predictions = np.concatenate(references).argmax(-1)[labelled]
        assert report["original"]["quality"]["accuracy"] == pytest.approx(np.mean(predictions == label_ids))


# --- Mistakes the caller can fix are EngineUserError, raised before any heavy work. ---

def _request(model_dir: Path, tmp_path: Path, **changes) -> PipelineRequest:
    fields = {
        "model_dir": model_dir, "recipe": Recipe.from_dict(QUANTIZE_RECIPE), "work_dir": tmp_path / "work",
        "output_dir": tmp_path / "out", "eval": FAST_EVAL,
    }
    return PipelineRequest(**(fields | changes))


def test_unknown_label_in_the_dataset_is_a_user_error(tiny_models, tmp_path):
    dataset = tmp_path / "bad.jsonl"
    dataset.write_text('{"text": "fine", "label": "neutral"}\n', encoding="utf-8")
    with pytest.raises(EngineUserError, match="'neutral' is not a class"):
        run_pipeline(_request(tiny_models["classifier"], tmp_path, dataset_path=dataset), lambda *_: None)


def test_cuda_without_a_gpu_is_a_user_error(tiny_models, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(EngineUserError, match="no usable GPU"):
        run_pipeline(_request(tiny_models["encoder"], tmp_path, device="cuda"), lambda *_: None)


def test_a_pickle_checkpoint_is_a_user_error(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(EngineUserError, match="Pickle checkpoints are refused"):
        run_pipeline(_request(folder, tmp_path), lambda *_: None)


def test_sequence_length_beyond_the_model_is_a_user_error(tiny_models, tmp_path):
    request = _request(tiny_models["encoder"], tmp_path, eval=FAST_EVAL | {"sequence_length": 512})
    with pytest.raises(EngineUserError, match="exceeds the model's limit of 128"):
        run_pipeline(request, lambda *_: None)
