"""The distill technique and the shared training loop: students' shapes and reloading, the loss
formulas, short training runs per task, masks through `recover`, augmentation, and bad params."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from transformers.pytorch_utils import Conv1D

from tests.factories import build_tiny_model
from workers.engine.architectures.task_io import AUTO_CLASS_BY_TASK
from workers.engine.errors import EngineUserError
from workers.engine.loading import load_model, load_tokenizer
from workers.engine.model_folder import inspect_model_folder
from workers.engine.state import ModelState, StepContext
from workers.engine.students import block_ends, choose_layers, fewer_layers, ffn_importance, narrower_ffn
from workers.engine.techniques.distill import DistillConfig, apply_distill
from workers.engine.training.loop import recover
from workers.engine.training.settings import RecoverySettings
from workers.engine.training.data import augment, batch_indices, collate, tokenise
from workers.engine.training.losses import causal_lm_loss, classifier_loss, mean_pool
from workers.engine.training.settings import DEFAULT_EPOCHS

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back when you have a minute.",
    "The central bank left interest rates unchanged this year.",
    "Our team won the game after a long and difficult season.",
    "This phone is great, but the battery life could be better.",
    "Where is the nearest train station, and how far is it?",
    "A good book and a cup of water on a long day.",
    "The new model runs fast on small data.",
    "They said the price of food is high in the city.",
    "We can help you with your order at the bank.",
    "The first test was slow, the last one was fast.",
    "Her old phone is still the best one she has.",
]
SEQUENCE_LENGTH = 32
# Few, large steps: these runs check that training moves the student toward the teacher, not how far.
FAST = {"max_steps": 16, "batch_size": 6, "lr": 3e-3}


pytestmark = pytest.mark.usefixtures("one_thread")


def load_state(model_dir: Path) -> ModelState:
    task = inspect_model_folder(model_dir).task
    return ModelState(task=task, config_dir=model_dir, torch_model=load_model(model_dir, task))


def context_for(model_dir: Path, work_dir: Path, **extra) -> StepContext:
    return StepContext(
        work_dir=work_dir, device="cpu", tokenizer=load_tokenizer(model_dir), sequence_length=SEQUENCE_LENGTH,
        calibration_texts=TEXTS, **extra,
    )


def encode(model_dir: Path) -> dict[str, torch.Tensor]:
    return dict(load_tokenizer(model_dir)(TEXTS, padding=True, return_tensors="pt"))


def outputs(model: torch.nn.Module, batch: dict[str, torch.Tensor]):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


# --- Students ---

@pytest.mark.parametrize("kind, layers_attr", [("encoder", "encoder.layer"), ("causal-lm", "transformer.h")])
def test_fewer_layers_copies_the_chosen_layers_and_reloads(tiny_models, tmp_path, kind, layers_attr):
    state = load_state(tiny_models[kind])
    teacher = state.torch_model
    student = fewer_layers(teacher, [1])
    assert student.config.num_hidden_layers == 1 and teacher.config.num_hidden_layers == 2
    kept = student.get_submodule(layers_attr)
    assert len(kept) == 1
    teacher_layer = teacher.get_submodule(layers_attr)[1].state_dict()
    assert all(torch.equal(value, teacher_layer[name]) for name, value in kept[0].state_dict().items())

    student.save_pretrained(tmp_path, safe_serialization=True)
    reloaded = AUTO_CLASS_BY_TASK[state.task].from_pretrained(tmp_path).eval()
    assert len(reloaded.get_submodule(layers_attr)) == 1
    batch = encode(tiny_models[kind])
    field = "last_hidden_state" if kind == "encoder" else "logits"
    assert torch.allclose(getattr(outputs(reloaded, batch), field), getattr(outputs(student, batch), field), atol=1e-6)


@pytest.mark.parametrize("kind", ["encoder", "classifier", "causal-lm"])
@pytest.mark.parametrize("silenced", [0, 1])
def test_choose_layers_drops_the_layer_that_changes_the_outputs_least(tiny_models, kind, silenced):
    teacher = load_state(tiny_models[kind]).torch_model
    layer = (teacher.base_model.encoder.layer if kind != "causal-lm" else teacher.base_model.h)[silenced]
    # A residual block whose branches write zeros passes its input through (up to a LayerNorm of a
    # LayerNorm output, for BERT), so it is the one to drop.
    with torch.no_grad():
        branches = ("attn.c_proj", "mlp.c_proj") if kind == "causal-lm" else ("attention.output.dense", "output.dense")
        for name in branches:
            layer.get_submodule(name).weight.zero_()
            layer.get_submodule(name).bias.zero_()
    task = load_state(tiny_models[kind]).task
    assert choose_layers(teacher, task, 1, encode(tiny_models[kind])) == [1 - silenced]


def test_block_ends():
    # Each kept layer is matched to the end of the block it replaces; the last to the final layer.
    assert block_ends([0, 2, 4], 6) == [1, 3, 5]
    assert block_ends([1, 5], 6) == [4, 5]


@pytest.mark.parametrize("kind", ["encoder", "causal-lm"])
def test_narrower_ffn_keeps_the_important_neurons_and_reloads(tiny_models, tmp_path, kind):
    model = load_state(tiny_models[kind]).torch_model
    batch = encode(tiny_models[kind])
    projection = "output.dense" if kind == "encoder" else "mlp.c_proj"
    layers = model.encoder.layer if kind == "encoder" else model.transformer.h
    size = model.config.intermediate_size if kind == "encoder" else 4 * model.config.n_embd
    # Silence every odd neuron: only even ones carry signal, so keeping half must keep the outputs.
    with torch.no_grad():
        for layer in layers:
            out = layer.get_submodule(projection)
            if isinstance(out, Conv1D):
                out.weight[1::2, :] = 0  # Conv1D: (in, out), a neuron is a row
            else:
                out.weight[:, 1::2] = 0  # Linear: (out, in), a neuron is a column
    field = "last_hidden_state" if kind == "encoder" else "logits"
    before = getattr(outputs(model, batch), field)

    kept = narrower_ffn(model, 0.5, ffn_importance(model, [batch]))
    assert kept == size // 2
    field_name = "intermediate_size" if kind == "encoder" else "n_inner"
    assert getattr(model.config, field_name) == kept
    assert torch.allclose(getattr(outputs(model, batch), field), before, atol=1e-5)

    model.save_pretrained(tmp_path, safe_serialization=True)
    reloaded = AUTO_CLASS_BY_TASK[load_state(tiny_models[kind]).task].from_pretrained(tmp_path).eval()
    assert torch.allclose(getattr(outputs(reloaded, batch), field), before, atol=1e-5)


# --- Losses ---

def test_classifier_loss_matches_the_formula():
    student = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0], [1.5, 1.5, 0.0]])
    teacher = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 2.0, 0.5], [0.0, 3.0, -1.0]])
    labels = torch.tensor([0, 2, -1])

    def direct(alpha: float, temperature: float) -> float:
        total = 0.0
        for row in range(3):
            p_t = [math.exp(z / temperature) for z in teacher[row].tolist()]
            p_s = [math.exp(z / temperature) for z in student[row].tolist()]
            p_t = [v / sum(p_t) for v in p_t]
            p_s = [v / sum(p_s) for v in p_s]
            kl = temperature**2 * sum(t * math.log(t / s) for t, s in zip(p_t, p_s))
            if labels[row] < 0:
                total += kl
                continue
            logits = student[row].tolist()
            ce = -logits[labels[row]] + math.log(sum(math.exp(z) for z in logits))
            total += alpha * ce + (1 - alpha) * kl
        return total / 3

    for alpha, temperature in [(0.5, 2.0), (0.0, 1.0), (1.0, 4.0), (0.3, 0.5)]:
        got = classifier_loss(student, teacher, labels, alpha, temperature).item()
        assert got == pytest.approx(direct(alpha, temperature), rel=1e-5)
    assert classifier_loss(teacher, teacher, None, 0.5, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_causal_lm_loss_ignores_padding():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    real = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    expected = sum(
        4.0 * torch.nn.functional.kl_div(
            torch.log_softmax(student[b, t] / 2, -1), torch.log_softmax(teacher[b, t] / 2, -1), log_target=True,
            reduction="sum",
        ).item()
        for b, t in real
    ) / len(real)
    assert causal_lm_loss(student, teacher, mask, 2.0).item() == pytest.approx(expected, rel=1e-5)
    garbage = student.clone()
    garbage[0, 3] = 100.0  # a padded position must not count
    assert causal_lm_loss(garbage, teacher, mask, 2.0).item() == pytest.approx(expected, rel=1e-5)


# --- Training runs ---

def distance(task: str, teacher: torch.nn.Module, student: torch.nn.Module, batch: dict) -> float:
    """How far the student is from the teacher on TEXTS: 1 - pooled cosine for encoders, the mean KL of
    the output distributions (per text, or per real token for causal LMs) otherwise."""
    reference, result = outputs(teacher, batch), outputs(student, batch)
    mask = batch["attention_mask"]
    if task == "feature-extraction":
        pooled = [mean_pool(o.last_hidden_state, mask) for o in (reference, result)]
        return 1 - torch.nn.functional.cosine_similarity(*pooled).mean().item()
    if task == "text-generation":
        return causal_lm_loss(result.logits, reference.logits, mask, 1.0).item()
    return classifier_loss(result.logits, reference.logits, None, 0.0, 1.0).item()


@pytest.mark.parametrize("kind", ["encoder", "classifier", "causal-lm"])
def test_distilling_a_half_depth_student_moves_it_toward_the_teacher(tiny_models, tmp_path, kind):
    model_dir = tiny_models[kind]
    state = load_state(model_dir)
    teacher = state.torch_model
    batch = encode(model_dir)
    extra = {}
    if kind == "classifier":
        # Labels the student can fit (the teacher's own classes) on most rows, and some unlabelled rows.
        predicted = outputs(teacher, batch).logits.argmax(-1).tolist()
        extra["calibration_labels"] = predicted[:8] + [-1] * (len(TEXTS) - 8)
    context = context_for(model_dir, tmp_path, **extra)
    progress: list[float] = []
    context.on_progress = progress.append

    result = apply_distill(DistillConfig(student_layers=1, **FAST), state, context)

    student = result.torch_model
    untrained = fewer_layers(teacher, context.details["student_layers"])
    assert student is not teacher and student.config.num_hidden_layers == 1
    trained_distance, untrained_distance = (distance(state.task, teacher, m, batch) for m in (student, untrained))
    assert trained_distance < 0.9 * untrained_distance
    details = context.details
    assert details["final_loss"] < details["initial_loss"]
    assert details["student_kind"] == "fewer_layers" and len(details["student_layers"]) == 1
    assert details["parameters_student"] < details["parameters_teacher"]
    assert details["steps"] == FAST["max_steps"]
    # The default augmentation (token_dropout, 2 copies) enlarges the set, and the report says so.
    assert details["augment"] == "token_dropout" and details["original_examples"] == len(TEXTS)
    assert len(TEXTS) < details["examples_used"] <= 3 * len(TEXTS)
    assert details["labelled_examples"] == (8 if kind == "classifier" else 0)
    json.dumps(details)
    assert progress == sorted(progress) and progress[-1] == 1.0
    # The new config folder describes the student, so packaging and later steps see one layer.
    layers_field = "n_layer" if kind == "causal-lm" else "num_hidden_layers"
    assert json.loads((result.config_dir / "config.json").read_text())[layers_field] == 1
    assert (result.config_dir / "tokenizer_config.json").is_file()


def test_masks_stay_zero_through_recover(tiny_models):
    model_dir = tiny_models["encoder"]
    teacher = load_state(model_dir).torch_model
    student = copy.deepcopy(teacher)
    name = "encoder.layer.0.intermediate.dense.weight"
    parameter = dict(student.named_parameters())[name]
    mask = (torch.rand(parameter.shape, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    with torch.no_grad():
        parameter.add_(0.3 * torch.randn_like(parameter))  # damage, so there is something to recover
    before = parameter.detach().clone()
    settings = RecoverySettings(max_steps=6, batch_size=6, lr=1e-2, augment="none")
    stats = recover(
        student, teacher, "feature-extraction", TEXTS, None, load_tokenizer(model_dir), settings, SEQUENCE_LENGTH,
        masks={name: mask},
    )
    assert stats.steps == 6 and stats.examples_used == len(TEXTS)
    assert torch.count_nonzero(parameter[mask == 0]) == 0
    assert not torch.allclose(parameter[mask == 1], before[mask == 1])
    with pytest.raises(ValueError, match="not a parameter"):
        recover(
            student, teacher, "feature-extraction", TEXTS, None, load_tokenizer(model_dir), settings, SEQUENCE_LENGTH,
            masks={"encoder.nope.weight": mask},
        )


# --- Augmentation ---

@pytest.mark.parametrize("kind", ["token_mask", "token_dropout", "span_deletion", "splice", "mixed"])
def test_augmentation_adds_altered_copies_and_keeps_special_tokens(tiny_models, kind):
    tokenizer = load_tokenizer(tiny_models["encoder"])
    originals = tokenise(tokenizer, TEXTS, None, SEQUENCE_LENGTH)
    result = augment(originals, tokenizer, kind, 3, seed=1)
    assert result[: len(originals)] == originals
    copies = result[len(originals):]
    assert len(TEXTS) < len(copies) <= 3 * len(TEXTS)
    assert augment(originals, tokenizer, kind, 3, seed=1) == result  # seeded
    for copy_ in copies:
        assert copy_.ids[0] == tokenizer.cls_token_id and copy_.ids[-1] == tokenizer.sep_token_id
        assert copy_.label == -1
    if kind == "token_mask":
        assert all(tokenizer.mask_token_id in copy_.ids for copy_ in copies)
    if kind in ("token_dropout", "span_deletion"):
        assert all(len(copy_.ids) < max(len(o.ids) for o in originals) for copy_ in copies)
    assert augment(originals, tokenizer, "none", 3, seed=1) == originals


def test_span_deletion_removes_one_contiguous_span(tiny_models):
    tokenizer = load_tokenizer(tiny_models["encoder"])
    [original] = tokenise(tokenizer, [TEXTS[2]], None, SEQUENCE_LENGTH)
    for altered in augment([original], tokenizer, "span_deletion", 5, seed=3)[1:]:
        removed = len(original.ids) - len(altered.ids)
        assert removed == round(0.2 * (len(original.ids) - 2))
        # What is left is a prefix and a suffix of the original.
        start = next(i for i, (a, b) in enumerate(zip(original.ids, altered.ids)) if a != b)
        assert altered.ids == original.ids[:start] + original.ids[start + removed:]


def test_splice_joins_the_start_of_one_text_to_the_end_of_another(tiny_models):
    tokenizer = load_tokenizer(tiny_models["encoder"])
    originals = tokenise(tokenizer, TEXTS, None, SEQUENCE_LENGTH)
    special = set(tokenizer.all_special_ids)
    bodies = [[token for token in original.ids if token not in special] for original in originals]
    copies = augment(originals, tokenizer, "splice", 4, seed=2)[len(originals):]
    assert copies
    joined_two = 0
    for copy_ in copies:
        body = [token for token in copy_.ids if token not in special]
        # Some original's start (never the whole of it), then some original's end (never the whole of it).
        splits = [
            (first, second) for first in bodies for second in bodies
            for keep in range(1, len(first)) if body[:keep] == first[:keep]
            and 0 < len(body) - keep < len(second) and body[keep:] == second[len(second) - (len(body) - keep):]
        ]
        assert splits, tokenizer.decode(copy_.ids)
        joined_two += any(first != second for first, second in splits)
        assert len(body) <= max(len(b) for b in bodies)
    assert joined_two > len(copies) // 2  # a text is mostly joined to another, not to itself


def test_collate_pads_right_to_the_longest(tiny_models):
    tokenizer = load_tokenizer(tiny_models["encoder"])
    examples = tokenise(tokenizer, TEXTS[:3], [1, -1, 0], SEQUENCE_LENGTH)
    batch = collate(examples, tokenizer.pad_token_id)
    width = max(len(example.ids) for example in examples)
    assert batch["input_ids"].shape == (3, width)
    assert batch["attention_mask"].sum(1).tolist() == [len(example.ids) for example in examples]
    assert batch["labels"].tolist() == [1, -1, 0]


def _padding_fraction(batches: list[list[int]], lengths: list[int]) -> float:
    padded = sum(max(lengths[index] for index in batch) * len(batch) for batch in batches)
    return 1 - sum(lengths[index] for batch in batches for index in batch) / padded


def test_batches_cover_every_example_each_epoch_and_group_lengths():
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(3, 120, (2000,), generator=generator).tolist()
    batches = batch_indices(lengths, 16, 2 * 125, seed=0)
    assert len(batches) == 250 and all(len(batch) == 16 for batch in batches)
    for epoch in (batches[:125], batches[125:]):
        assert sorted(index for batch in epoch for index in batch) == list(range(2000))
    assert batches[:125] != batches[125:]  # a fresh order each epoch
    assert batch_indices(lengths, 16, 250, seed=0) == batches
    assert batch_indices(lengths, 16, 250, seed=1) != batches
    # Random batches of these lengths pad about 40% of their tokens; grouped ones far less.
    random_order = torch.randperm(2000, generator=generator).tolist()
    random_batches = [random_order[start:start + 16] for start in range(0, 2000, 16)]
    assert _padding_fraction(batches, lengths) < 0.1 < 0.3 < _padding_fraction(random_batches, lengths)
    # Batch order is shuffled rather than longest first within each group of batches.
    longest = [max(lengths[index] for index in batch) for batch in batches[:125]]
    assert longest != sorted(longest, reverse=True)


def test_batches_cycle_when_steps_outrun_an_epoch():
    batches = batch_indices([5, 9, 2], 2, 5, seed=0)
    assert len(batches) == 5
    for epoch in (batches[0:2], batches[2:4]):
        assert sorted(index for batch in epoch for index in batch) == [0, 1, 2]
    assert len(batches[4]) in (1, 2)


# --- Uploaded students ---

def test_an_uploaded_student_with_the_teachers_vocabulary_is_trained(tiny_models, tmp_path):
    student_dir = build_tiny_model("encoder", tmp_path / "student", hidden_size=32)
    state = load_state(tiny_models["encoder"])
    context = context_for(tiny_models["encoder"], tmp_path / "work", model_paths={"small-1": student_dir})
    result = apply_distill(
        DistillConfig(student_model_id="small-1", max_steps=2, batch_size=6, augment="none"), state, context
    )
    assert context.details["student_kind"] == "uploaded" and context.details["examples_used"] == len(TEXTS)
    assert result.torch_model is not state.torch_model


@pytest.mark.parametrize(
    "student_kind, hidden_size, message",
    [("causal-lm", 32, "vocabulary differs"), ("encoder", 16, "hidden size is 16")],
)
def test_an_incompatible_uploaded_student_is_refused(tiny_models, tmp_path, student_kind, hidden_size, message):
    student_dir = build_tiny_model(student_kind, tmp_path / "student", hidden_size=hidden_size)
    state = load_state(tiny_models["encoder"])
    context = context_for(tiny_models["encoder"], tmp_path / "work", model_paths={"other": student_dir})
    with pytest.raises(EngineUserError, match=message):
        apply_distill(DistillConfig(student_model_id="other", max_steps=1), state, context)


def test_an_unknown_student_model_id_names_the_available_ones(tiny_models, tmp_path):
    state = load_state(tiny_models["encoder"])
    context = context_for(tiny_models["encoder"], tmp_path, model_paths={"abc": tmp_path})
    with pytest.raises(EngineUserError, match=r"'missing' names no uploaded model.*available: abc"):
        apply_distill(DistillConfig(student_model_id="missing", max_steps=1), state, context)


# --- Bad params ---

@pytest.mark.parametrize(
    "params, message",
    [
        ({"student_layers": 1, "epochs": 2, "max_steps": 10}, "give epochs or max_steps, not both"),
        ({"student_layers": 1, "epochs": 1000}, "less than or equal to 100"),
        ({"student_layers": 1, "max_steps": 10**7}, "less than or equal to 100000"),
        ({}, "give exactly one of student_layers, student_depth, student_width or student_model_id"),
        ({"student_layers": 1, "student_width": 0.5}, "give exactly one of student_layers"),
        ({"student_layers": [2, 0]}, "increasing and distinct"),
        ({"student_layers": 0}, "at least 1 layer"),
        ({"student_width": 1.0}, "less than 1"),
        ({"student_layers": 1, "batch_size": 0}, "greater than or equal to 1"),
        ({"student_layers": 1, "lr": 2.0}, "less than or equal to 1"),
        ({"student_layers": 1, "augment": "shuffle"}, "token_dropout"),
        ({"student_layers": 1, "epochs": "3"}, "valid integer"),
        ({"student_layers": 1, "teacher": "x"}, "Extra inputs"),
    ],
)
def test_bad_params_are_refused_with_a_clear_message(params, message):
    with pytest.raises(ValidationError, match=message):
        DistillConfig.model_validate(params)


def test_recovery_settings_are_strict_and_round_trip():
    settings = RecoverySettings(max_steps=50, augment="none")
    assert RecoverySettings.model_validate(settings.model_dump(mode="json")) == settings
    assert settings.total_steps(1000) == 50
    assert RecoverySettings(batch_size=10).total_steps(25) == DEFAULT_EPOCHS * 3  # 3 batches per epoch
    with pytest.raises(ValidationError, match="Extra inputs"):
        RecoverySettings(epochs=1, student_layers=2)


@pytest.mark.parametrize(
    "layers, message", [([5], "layer the teacher lacks"), (2, "needs fewer"), ([0, 1], "needs fewer")]
)
def test_student_layers_beyond_the_teacher_are_refused(tiny_models, tmp_path, layers, message):
    state = load_state(tiny_models["encoder"])
    with pytest.raises(EngineUserError, match=message):
        apply_distill(
            DistillConfig(student_layers=layers, max_steps=1), state, context_for(tiny_models["encoder"], tmp_path)
        )


def test_alpha_one_without_labels_is_refused(tiny_models, tmp_path):
    state = load_state(tiny_models["classifier"])
    context = context_for(tiny_models["classifier"], tmp_path, calibration_labels=[-1] * len(TEXTS))
    with pytest.raises(EngineUserError, match="no text has a label"):
        apply_distill(DistillConfig(student_layers=1, alpha=1.0, max_steps=1), state, context)


def test_student_depth_is_a_fraction_of_the_teacher_layers():
    from workers.engine.recipe import Recipe

    config = DistillConfig(student_depth=0.5)
    assert config.referenced_models() == {}
    assert DistillConfig(student_model_id="abc").referenced_models() == {"student_model_id": "abc"}
    recipe = Recipe.from_dict({"steps": [{"technique": "distill", "params": {"student_model_id": "abc"}}]})
    assert recipe.referenced_models() == ["abc"]
