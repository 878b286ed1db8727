"""Choosing the texts a distillation or recovery trains on: all, random, or active (disagreement, made
diverse by k-center, chosen again as the student learns)."""

import copy
import dataclasses

import pytest
import torch
from pydantic import ValidationError

from tests.engine.test_low_rank import load_state
from tests.engine.test_recovery import context
from workers.engine.loading import load_model, load_tokenizer
from workers.engine.techniques.low_rank import LowRankConfig, apply_low_rank
from workers.engine.training.data import tokenise
from workers.engine.training.selection import active_choice, score_pool
from workers.engine.training.settings import RecoverySettings

# Distinct texts, two of them repeated many times: a choice that ignores diversity picks the repeats.
TEXTS = [
    "The quick brown fox jumps over the lazy dog.", "Please call me back when you have a minute.",
    "The bank left the rate unchanged this year.", "Our team won the game after a long season.",
    "This phone is great, but the battery could be better.", "Where is the nearest train station?",
    "A good book and a cup of water help a lot.", "The new model runs fast on a small data set.",
    "Rain is expected over the hills tomorrow morning.", "She wrote the letter in green ink.",
    "Prices for fresh fruit rose again in the spring.", "The museum opens late on Thursdays.",
]


def test_active_choice_takes_the_most_disagreeing_texts_but_not_a_duplicate_twice():
    embeddings = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0], [1.0, 0.001], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0]]), dim=-1
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1, 0.05])
    # Text 1 repeats text 0, so the second pick is text 2, then 3.
    assert active_choice(scores, embeddings, 3) == [0, 2, 3]
    # With too few distinct texts left, the duplicate fills the last place.
    assert active_choice(scores[:3], embeddings[:3], 3) == [0, 2, 1]


@pytest.mark.parametrize("kind, task", [
    ("encoder", "feature-extraction"), ("classifier", "text-classification"), ("causal-lm", "text-generation"),
])
def test_scores_are_the_student_s_distance_from_the_teacher(tiny_models, kind, task):
    model_dir = tiny_models[kind]
    teacher = load_model(model_dir, task).eval()
    tokenizer = load_tokenizer(model_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pool = tokenise(tokenizer, TEXTS, None, 64)
    same, embeddings = score_pool(copy.deepcopy(teacher), teacher, task, pool, pad_id, 2.0)
    assert same.abs().max() < 1e-5 and embeddings.shape == (len(TEXTS), teacher.config.hidden_size)
    damaged = copy.deepcopy(teacher)
    with torch.no_grad():
        for parameter in damaged.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    scores, again = score_pool(damaged, teacher, task, pool, pad_id, 2.0, embeddings)
    assert again is embeddings and (scores > 1e-6).all()


@pytest.mark.parametrize("selection", ["random", "active"])
def test_recovery_trains_on_max_examples_texts(tiny_models, tmp_path, selection):
    model_dir = tiny_models["encoder"]
    settings = {"max_steps": 24, "lr": 1e-3, "batch_size": 4, "augment": "token_dropout", "augment_copies": 1,
                "selection": selection, "max_examples": 4, "rescore_steps": 10}
    step_context = dataclasses.replace(context(model_dir, tmp_path), calibration_texts=TEXTS)
    apply_low_rank(LowRankConfig(rank_fraction=0.25, recover=settings), load_state(model_dir), step_context)
    recovery = step_context.details["recovery"]
    chosen = recovery["selection"]
    assert recovery["original_examples"] == 4 and recovery["examples_used"] <= 8
    assert chosen["method"] == selection and chosen["pool_texts"] == len(TEXTS)
    if selection == "active":
        # Chosen three times (steps 0, 10, 20), each time texts the student disagrees on more than on average.
        assert chosen["rounds"] == 3 and 4 <= chosen["distinct_texts_used"] <= 12
        assert all(picked > pool for picked, pool in zip(chosen["mean_disagreement_chosen"],
                                                         chosen["mean_disagreement_pool"]))
    else:
        assert chosen["rounds"] == 1 and chosen["distinct_texts_used"] == 4
    assert recovery["final_loss"] < recovery["initial_loss"]


@pytest.mark.parametrize("params, message", [
    ({"selection": "active"}, "needs max_examples"),
    ({"max_examples": 10}, "applies to selection random or active"),
])
def test_selection_params_that_cannot_work_are_refused(params, message):
    with pytest.raises(ValidationError, match=message):
        RecoverySettings(**params)
