"""`recover` on prune and low_rank: the damaged model is fine-tuned against the undamaged one, gets
closer to it, and pruned weights stay zero."""

import copy

import torch

from tests.engine.test_low_rank import load_state, outputs
from workers.engine.loading import load_tokenizer
from workers.engine.state import StepContext
from workers.engine.techniques.low_rank import LowRankConfig, apply_low_rank
from workers.engine.techniques.prune import PruneConfig
from workers.engine.techniques.prune.handler import apply_prune
from workers.engine.training.loop import recover
from workers.engine.training.settings import RecoverySettings

CORPUS = [
    "The quick brown fox jumps over the lazy dog.", "Please call me back when you have a minute.",
    "The bank left the rate unchanged this year.", "Our team won the game after a long season.",
    "This phone is great, but the battery could be better.", "Where is the nearest train station?",
    "A good book and a cup of water help a lot.", "The new model runs fast on a small data set.",
] * 4
RECOVER = {"max_steps": 40, "lr": 1e-3, "batch_size": 8, "augment": "none"}


def context(model_dir, work_dir):
    return StepContext(work_dir=work_dir, device="cpu", tokenizer=load_tokenizer(model_dir), sequence_length=64,
                       calibration_texts=CORPUS)


def distance(model, reference, model_dir) -> float:
    with torch.no_grad():
        return float((outputs(model, model_dir) - reference).pow(2).mean())


def test_prune_recovery_gets_closer_and_keeps_the_zeros(tiny_models, tmp_path):
    model_dir = tiny_models["encoder"]
    original = load_state(model_dir)
    reference = outputs(original.torch_model, model_dir).detach()
    params = {"structure": "unstructured", "sparsity": 0.6, "scope": "per_layer"}
    plain = apply_prune(PruneConfig(**params), copy.deepcopy(original), context(model_dir, tmp_path / "a"))
    step_context = context(model_dir, tmp_path / "b")
    recovered = apply_prune(PruneConfig(**params, recover=RECOVER), copy.deepcopy(original), step_context)
    assert distance(recovered.torch_model, reference, model_dir) < distance(plain.torch_model, reference, model_dir)
    recovery = step_context.details["recovery"]
    assert recovery["steps"] == 40 and recovery["final_loss"] < recovery["initial_loss"]
    # The same weights are zero as without recovery: training never regrows them.
    for (name, before), after in zip(plain.torch_model.named_parameters(), recovered.torch_model.parameters()):
        if name in {f"{layer}.weight" for layer in step_context.details["layer_sparsity"]}:
            assert torch.equal(before == 0, after == 0), name


def test_low_rank_recovery_gets_closer(tiny_models, tmp_path):
    model_dir = tiny_models["encoder"]
    original = load_state(model_dir)
    reference = outputs(original.torch_model, model_dir).detach()
    plain = apply_low_rank(LowRankConfig(rank_fraction=0.25), copy.deepcopy(original), context(model_dir, tmp_path / "a"))
    step_context = context(model_dir, tmp_path / "b")
    recovered = apply_low_rank(LowRankConfig(rank_fraction=0.25, recover=RECOVER), copy.deepcopy(original),
                               step_context)
    assert distance(recovered.torch_model, reference, model_dir) < distance(plain.torch_model, reference, model_dir)
    assert step_context.details["recovery"]["examples_used"] == len(CORPUS)


def test_a_stretch_of_a_longer_schedule_trains_at_that_stretch_s_rate(tiny_models):
    """schedule_span: a federated round takes its part of one warmup-then-decay over every round."""
    model_dir = tiny_models["encoder"]
    teacher = load_state(model_dir)
    settings = RecoverySettings(max_steps=8, lr=1e-2, batch_size=8, augment="none")

    def moved(span) -> float:
        student = copy.deepcopy(teacher.torch_model)
        with torch.no_grad():
            for parameter in student.parameters():
                parameter.mul_(0.9)  # damaged, so that there is something to learn
        before = [parameter.detach().clone() for parameter in student.parameters()]
        recover(student, teacher.torch_model, teacher.task, CORPUS, None, load_tokenizer(model_dir), settings, 64,
                schedule_span=span)
        return sum(float((after.detach() - start).abs().sum()) for after, start in zip(student.parameters(), before))

    # The schedule's last stretch is at rate zero, AdamW's decay included: nothing moves.
    assert moved((24, 24)) == 0
    # Its first stretch (warmup, then the highest rates) moves the weights more than its last but one.
    assert moved((0, 24)) > moved((8, 24)) > moved((16, 24)) > 0
