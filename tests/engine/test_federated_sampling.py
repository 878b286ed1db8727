"""Site-level differential privacy with the sites sampled each round (Poisson sampling): each round takes each
site with probability q, the private average divides by the expected number of sites, a round that samples
none moves the weights by the noise alone, and the accountant counts the sampling, which spends less epsilon
than every site in every round."""

from pathlib import Path

import pytest
import torch

from tests.engine.test_federated import FAST, damaged_state, write_site_datasets
from workers.engine.federated.config import FederatedConfig
from workers.engine.federated.handler import apply_federated
from workers.engine.federated.local_sites import LocalSites
from workers.engine.loading import load_tokenizer
from workers.engine.state import StepContext

pytestmark = pytest.mark.usefixtures("one_thread")

THREE_SITES = [{"site": "north", "dataset_id": "d1"}, {"site": "south", "dataset_id": "d2"},
               {"site": "east", "dataset_id": "d3"}]
# What dp-accounting's RDP accountant gives for z = 1, 4 rounds, delta 1e-5 with every site in every round
# (workers.engine.federated.coordinator.epsilon_spent(1.0, 4, 1e-5) in Flower's venv).
EPSILON_EVERY_SITE = 10.7255


def run_sampled_step(dp: dict, rounds: int, tiny_models, tmp_path: Path):
    model_dir = tiny_models["encoder"]
    sites = LocalSites(tmp_path / "sites", model_dir, write_site_datasets(tmp_path))
    context = StepContext(work_dir=tmp_path / "step", device="cpu", tokenizer=load_tokenizer(model_dir),
                          sequence_length=32, announce=sites)
    context.work_dir.mkdir(parents=True)
    state = damaged_state(model_dir)
    before = {name: value.clone() for name, value in state.torch_model.state_dict().items()}
    config = FederatedConfig(**{**FAST, "rounds": rounds, "sites": THREE_SITES, "differential_privacy": dp})
    try:
        result = apply_federated(config, state, context)
    finally:
        sites.stop()
    return before, result.torch_model.state_dict(), context.details, sites


def test_sampled_sites_divide_by_the_expected_count_and_spend_less_epsilon(tiny_models, tmp_path):
    dp = {"noise_multiplier": 1.0, "clipping_norm": 0.05, "delta": 1e-5, "site_sampling_rate": 0.5}
    _, _, details, sites = run_sampled_step(dp, 4, tiny_models, tmp_path)
    privacy = details["differential_privacy"]
    assert details["rounds_completed"] == 4
    # Each round's noise: z x C over the expected 1.5 sites, whoever the sample was.
    assert privacy["noise_std_per_round"] == pytest.approx([1.0 * 0.05 / 1.5] * 4)
    assert privacy["sites_per_round"] == [len(record["sites"]) for record in details["rounds"]]
    assert "Poisson sample" in privacy["accountant"] and "probability 0.5" in privacy["adjacency"]
    # Amplified by sampling: below every-site-every-round's epsilon for the same noise and rounds.
    assert 0 < privacy["epsilon"] < 0.8 * EPSILON_EVERY_SITE
    for record in details["rounds"]:
        # A site trained a round only if it was sampled: its rounds are the report's rounds that list it.
        assert set(record["sites"]) <= {"north", "south", "east"} and record["dropped"] == []
    for site in ("north", "south", "east"):
        trained = [event["round"] for event in sites.events[site] if event["event"] == "round"]
        assert trained == [record["round"] for record in details["rounds"] if site in record["sites"]]


def test_rounds_that_sample_no_site_move_the_weights_by_the_noise_alone(tiny_models, tmp_path):
    # q = 1e-6: the chance that any of three sites is sampled in two rounds is 6e-6.
    dp = {"noise_multiplier": 1.0, "clipping_norm": 1e-7, "delta": 1e-5, "site_sampling_rate": 1e-6}
    before, after, details, sites = run_sampled_step(dp, 2, tiny_models, tmp_path)
    privacy = details["differential_privacy"]
    assert details["rounds_completed"] == 2 and privacy["sites_per_round"] == [0, 0]
    assert details["bytes_sent_to_sites"] == 0 and details["bytes_received_from_sites"] == 0
    assert all(event["event"] != "round" for events in sites.events.values() for event in events)
    # Std 1e-7 / 3e-6 per round on what sites train; the frozen embeddings kept.
    query = "encoder.layer.0.attention.self.query.weight"
    moved = (after[query] - before[query]).std().item()
    assert moved == pytest.approx(2**0.5 * 1e-7 / 3e-6, rel=0.25)
    assert torch.equal(after["embeddings.word_embeddings.weight"], before["embeddings.word_embeddings.weight"])
