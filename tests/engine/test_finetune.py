"""The finetune technique: a new head on an encoder or a classifier, training from labels alone or with a
teacher, the held-out accuracy it reports, refusals, and a whole job that fine-tunes then quantizes."""

import json
import random
from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from pydantic import ValidationError

from tests.engine.conftest import FAST_EVAL
from workers.engine.errors import EngineUserError
from workers.engine.loading import load_model, load_tokenizer
from workers.engine.model_folder import inspect_model_folder
from workers.engine.recipe import Recipe, RecipeError
from workers.engine.state import ModelState, StepContext
from workers.engine.techniques.finetune import _ClassOrder, apply_finetune
from workers.engine.techniques.finetune_config import FinetuneConfig
from workers.engine.target import step_task_problems

# A task the tiny random encoder can learn from the words alone: which topic's words a sentence uses.
TOPIC_WORDS = {
    "money": ["bank", "price", "rate", "order"],
    "sport": ["team", "game", "run", "fast"],
    "media": ["book", "film", "phone", "model"],
}
FILLER = ["the", "a", "of", "to", "and", "is", "it", "that", "for", "on", "with", "this"]
FAST = {"lr": 3e-3, "epochs": 8, "batch_size": 8}


def topic_rows(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        topic = sorted(TOPIC_WORDS)[index % len(TOPIC_WORDS)]
        words = rng.sample(TOPIC_WORDS[topic], 2) + rng.sample(FILLER, 4)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": topic})
    return rows


pytestmark = pytest.mark.usefixtures("one_thread")


def state_of(model_dir: Path) -> ModelState:
    task = inspect_model_folder(model_dir).task
    return ModelState(task=task, config_dir=model_dir, torch_model=load_model(model_dir, task))


def context_of(model_dir: Path, work_dir: Path, rows: list[dict], **extra) -> StepContext:
    return StepContext(
        work_dir=work_dir, device="cpu", tokenizer=load_tokenizer(model_dir), sequence_length=32,
        calibration_texts=[row["text"] for row in rows],
        calibration_label_names=[row.get("label") for row in rows], **extra,
    )


def test_an_encoder_learns_a_new_task_under_a_new_head(tiny_models, tmp_path):
    rows = topic_rows(90)
    context = context_of(tiny_models["encoder"], tmp_path, rows)
    state = apply_finetune(FinetuneConfig(**FAST), state_of(tiny_models["encoder"]), context)

    details = context.details
    assert state.task == "text-classification"
    assert details["head"] == "added"
    assert details["classes"] == ["media", "money", "sport"]
    assert details["heldout_rows"] == 18 and details["training_rows"] == 72
    assert details["heldout_accuracy_after"] >= 0.83
    assert details["heldout_accuracy_after"] > details["heldout_accuracy_before"] + 0.3
    assert details["final_loss"] < details["initial_loss"]
    # The folder it leaves describes a classifier of those classes, and the model reloads from it.
    config = json.loads((state.config_dir / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "media", "1": "money", "2": "sport"}


def test_a_classifier_keeps_its_head_for_its_own_classes_and_gets_a_new_one_for_others(tiny_models, tmp_path):
    own = [{"text": row["text"], "label": "positive" if index % 2 else "negative"}
           for index, row in enumerate(topic_rows(20))]
    context = context_of(tiny_models["classifier"], tmp_path / "own", own)
    original = state_of(tiny_models["classifier"])
    kept = apply_finetune(FinetuneConfig(max_steps=2), original, context)
    assert context.details["head"] == "kept"
    assert kept.torch_model is original.torch_model

    context = context_of(tiny_models["classifier"], tmp_path / "new", topic_rows(20))
    replaced = apply_finetune(FinetuneConfig(max_steps=2, labels=["sport", "money", "media"]), state_of(
        tiny_models["classifier"]), context)
    assert context.details["head"] == "replaced"
    assert replaced.torch_model.config.id2label == {0: "sport", 1: "money", 2: "media"}


def test_a_teacher_with_the_classes_in_another_order_is_reordered(tiny_models, tmp_path):
    teacher = load_model(tiny_models["classifier"], "text-classification")  # negative, positive
    reordered = _ClassOrder(teacher, [1, 0])
    batch = load_tokenizer(tiny_models["classifier"])(["a good day", "a bad film"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(reordered(**batch).logits, teacher(**batch).logits[:, [1, 0]])

    rows = [{"text": row["text"], "label": "positive" if index % 2 else "negative"}
            for index, row in enumerate(topic_rows(30))] + [{"text": "an unlabelled row of text"}]
    context = context_of(
        tiny_models["encoder"], tmp_path, rows, model_paths={"teacher-1": tiny_models["classifier"]},
    )
    apply_finetune(
        FinetuneConfig(max_steps=3, teacher_model_id="teacher-1", labels=["positive", "negative"]),
        state_of(tiny_models["encoder"]), context,
    )
    # With a teacher, unlabelled rows train too (on its outputs); they are never held out.
    assert context.details["training_rows"] == 31 - context.details["heldout_rows"]
    assert context.details["training_rows_labelled"] == context.details["training_rows"] - 1
    assert context.details["teacher_heldout_accuracy"] is not None


@pytest.mark.parametrize(
    ("rows", "params", "message"),
    [
        ([{"text": "one", "label": "a"}, {"text": "two", "label": "a"}], {}, "at least 2 classes"),
        ([{"text": "one", "label": "a"}, {"text": "two", "label": "c"}], {"labels": ["a", "b"]}, "'c'"),
        ([{"text": "one", "label": "a"}, {"text": "two", "label": "b"}], {"teacher_model_id": "nope"},
         "names no uploaded model"),
    ],
)
def test_bad_data_or_teacher_is_refused_with_what_to_fix(tiny_models, tmp_path, rows, params, message):
    context = context_of(tiny_models["encoder"], tmp_path, rows)
    with pytest.raises(EngineUserError, match=message):
        apply_finetune(FinetuneConfig(max_steps=1, **params), state_of(tiny_models["encoder"]), context)


def test_a_dataset_without_labels_is_refused(tiny_models, tmp_path):
    context = context_of(tiny_models["encoder"], tmp_path, [{"text": "one"}])
    context.calibration_label_names = None
    with pytest.raises(EngineUserError, match="label column"):
        apply_finetune(FinetuneConfig(max_steps=1), state_of(tiny_models["encoder"]), context)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"labels": ["a", "a"]}, "distinct"),
        ({"labels": ["a"]}, "at least 2"),
        ({"selection": "active", "max_examples": 10}, "teacher_model_id"),
        ({"heldout_fraction": 0.9}, "less than or equal to 0.5"),
    ],
)
def test_bad_params_are_refused(params, message):
    with pytest.raises(ValidationError, match=message):
        FinetuneConfig(**params)


def test_a_causal_lm_cannot_be_finetuned_and_steps_after_finetune_see_a_classifier():
    problems = step_task_problems([{"technique": "finetune"}], "text-generation")
    assert "causal language model" in problems[0]["msg"]
    problems = step_task_problems([{"technique": "finetune"}, {"technique": "llm_quantize"}], "feature-extraction")
    assert [problem["loc"] for problem in problems] == [["recipe", "steps", 1, "technique"]]


def test_a_job_finetunes_an_encoder_then_quantizes_the_classifier(tiny_models, hardware_footprint, tmp_path):
    from workers.engine.pipeline import PipelineRequest, run_pipeline

    dataset = tmp_path / "topics.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in topic_rows(60)), encoding="utf-8")
    recipe = Recipe.from_dict({"steps": [
        {"technique": "finetune", "params": FAST},
        {"technique": "quantize", "params": {"scheme": "int8_dynamic"}},
    ]})
    request = PipelineRequest(
        model_dir=tiny_models["encoder"], recipe=recipe, dataset_path=dataset, work_dir=tmp_path / "work",
        output_dir=tmp_path / "out", eval=FAST_EVAL, footprint={"hardware": hardware_footprint.model_dump()},
    )
    report = run_pipeline(request, lambda stage, fraction: None).report

    assert report["model"]["task"] == "text-classification"
    assert report["model"]["original_task"] == "feature-extraction"
    assert report["model"]["architecture"] == "BertForSequenceClassification"
    assert report["original"]["quality"] is None  # an encoder has no accuracy on the new task
    assert report["result"]["quality"]["accuracy"] >= 0.8
    assert report["fidelity"]["reference"] == "step 1 (finetune)"
    assert report["fidelity"]["primary_metric"] == "top1_agreement"
    assert report["fidelity"]["reference_quality"]["num_labelled"] == 60
    finetune, quantize = report["steps"]
    assert finetune["fidelity_after"] is None and finetune["details"]["head"] == "added"
    assert quantize["fidelity_after"]["primary_metric"] == "top1_agreement"
    assert report["slices"]["metric"] == "accuracy"
    # The shipped ONNX file is the classifier: one logit per class.
    package = tmp_path / "package"
    import zipfile
    zipfile.ZipFile(request.output_dir / "model.zip").extractall(package)
    session = ort.InferenceSession(str(next(package.rglob("*.onnx"))), providers=["CPUExecutionProvider"])
    tokens = load_tokenizer(tiny_models["encoder"])(["bank price of the order"], return_tensors="np")
    feed = {item.name: tokens[item.name] for item in session.get_inputs()}
    assert session.run(None, feed)[0].shape == (1, 3)


def test_a_finetune_recipe_on_a_causal_lm_is_refused_before_loading(tiny_models, tmp_path):
    from workers.engine.pipeline import PipelineRequest, run_pipeline

    request = PipelineRequest(
        model_dir=tiny_models["causal-lm"], recipe=Recipe.from_dict({"steps": [{"technique": "finetune"}]}),
        dataset_path=None, work_dir=tmp_path / "work", output_dir=tmp_path / "out", eval=FAST_EVAL,
    )
    with pytest.raises(RecipeError, match="causal language model"):
        run_pipeline(request, lambda stage, fraction: None)


def test_the_default_length_is_three_epochs_and_at_least_300_steps():
    assert FinetuneConfig().training_settings(100).max_steps == 300  # 3 epochs would be 21 steps
    assert FinetuneConfig().training_settings(4000).max_steps == 3 * 250
    assert FinetuneConfig(batch_size=8).training_settings(1000).max_steps == 3 * 125
    explicit = FinetuneConfig(epochs=2)
    assert explicit.training_settings(100) is explicit
