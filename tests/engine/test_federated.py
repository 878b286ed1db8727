"""The federated step with real processes: Flower's coordinator started by the handler, and one site client
per site started when the handler announces its address, each reading only its own dataset file. Sites
that drop out mid-round are tolerated down to min_sites_per_round, and not below."""

import json
import math
import random
import signal
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from tests.engine.test_finetune import TOPIC_WORDS, FILLER
from workers.engine.errors import EngineUserError
from workers.engine.federated.config import FederatedConfig
from workers.engine.federated.handler import apply_federated
from workers.engine.federated.local_sites import LocalSites
from workers.engine.loading import load_model, load_tokenizer
from workers.engine.model_folder import inspect_model_folder
from workers.engine.state import ModelState, StepContext

pytestmark = pytest.mark.usefixtures("one_thread")

PRUNED = "encoder.layer.0.intermediate.dense.weight"
FAST = {"rounds": 2, "local_steps": 6, "batch_size": 8, "lr": 3e-3, "connect_timeout_s": 120, "round_timeout_s": 120}


def site_rows(site_index: int, count: int = 24) -> list[dict]:
    """Each site's own texts: different topics weigh differently at each site, as real sites' data does."""
    rng = random.Random(site_index)
    topics = sorted(TOPIC_WORDS)
    return [
        {"text": " ".join(rng.sample(TOPIC_WORDS[topics[(row + site_index) % 3]], 2) + rng.sample(FILLER, 4))}
        for row in range(count)
    ]


def damaged_state(model_dir: Path) -> ModelState:
    """The tiny encoder with noise on its weights: what a compression step would leave for recovery."""
    task = inspect_model_folder(model_dir).task
    model = load_model(model_dir, task)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2 and "embeddings" not in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
        # And one matrix half pruned, as an unstructured prune step leaves it.
        dict(model.named_parameters())[PRUNED].view(-1)[::2] = 0
    return ModelState(task=task, config_dir=model_dir, torch_model=model)


def killer(kill_in_round: dict[str, int]):
    """Kills a site's client as it starts training a round, so its weights for that round never reach the
    coordinator. (Killing it on its "round" event, once trained, raced the weights it was sending.)"""

    def on_client_event(site, event, process):
        if event["event"] == "training" and kill_in_round.get(site) == event["round"]:
            process.send_signal(signal.SIGKILL)

    return on_client_event


def write_site_datasets(folder: Path) -> dict[str, Path]:
    paths = {}
    for index, site in enumerate(["north", "south", "east"]):
        path = folder / f"{site}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in site_rows(index)))
        paths[site] = path
    return paths


@pytest.fixture
def site_datasets(tmp_path) -> dict[str, Path]:
    return write_site_datasets(tmp_path)


def run_step(params: dict, tiny_models, tmp_path, site_datasets, kill_in_round=None, energy=None, impact_rates=None):
    model_dir = tiny_models["encoder"]
    state = damaged_state(model_dir)
    sites = LocalSites(tmp_path / "sites", model_dir, site_datasets, killer(kill_in_round or {}), energy=energy,
                       impact_rates=impact_rates)
    context = StepContext(
        work_dir=tmp_path / "step", device="cpu", tokenizer=load_tokenizer(model_dir), sequence_length=32,
        announce=sites,
    )
    context.work_dir.mkdir(parents=True)
    config = FederatedConfig(**{**FAST, **params})
    try:
        return state, apply_federated(config, state, context), context, sites
    finally:
        sites.stop()


def test_two_sites_train_the_model_and_only_weights_move(tiny_models, tmp_path, site_datasets):
    before = {name: value.clone() for name, value in damaged_state(tiny_models["encoder"]).torch_model.state_dict().items()}
    # One schedule over both rounds: round 2 trains on its decaying half, and must still learn.
    sites_params = {"sites": [{"site": "north", "dataset_id": "d1"}, {"site": "south", "dataset_id": "d2"}],
                    "lr_schedule": "across_rounds"}
    # North measures its energy on its own grid (its worker's settings); south has no meter.
    energy = {"north": {"country": "FRA"}}
    # ... and its water and embodied rates (its worker's WUE, grid and hardware: workers.engine.footprint.site).
    water_site = {"country": "FRA", "water_intensity_l_per_kwh": 2.0, "water_intensity_source": "test",
                  "wue_l_per_kwh": 1.8, "wue_source": "test", "pue": 1.0}
    rates = {"north": {"water_site": water_site, "gwp_g_per_hour": 36.0}}
    _, result, context, sites = run_step(sites_params, tiny_models, tmp_path, site_datasets, energy=energy,
                                         impact_rates=rates)

    details = context.details
    assert details["rounds_completed"] == 2 and details["dropped"] == []
    assert details["lr_schedule"] == "across_rounds" and "server_lr" not in details
    assert details["sites_in_last_round"] == ["north", "south"]
    assert details["examples_per_site"] == {"north": 24, "south": 24}
    assert details["bytes_sent_to_sites"] == details["bytes_received_from_sites"] > 0
    north = details["site_energy"]["sites"]["north"]
    assert north["country"] == "FRA" and north["energy_kwh"] > 0 and north["co2e_g"] > 0
    assert list(details["site_energy"]["sites"]) == ["north"] and details["site_energy"]["energy_kwh"] == north["energy_kwh"]
    # North's training becomes a stage of the job's energy, on its own grid; south measured nothing.
    [stage] = context.site_energy
    assert stage.site == "north" and stage.energy_kwh == pytest.approx(north["energy_kwh"])
    assert stage.co2e_g == pytest.approx(north["co2e_g"]) and stage.duration_s > 0
    assert stage.energy_kwh == pytest.approx(stage.cpu_kwh + stage.gpu_kwh + stage.ram_kwh)
    impact = stage.site_impact
    assert impact.onsite_l == pytest.approx(stage.energy_kwh * 1.8) and impact.offsite_l == pytest.approx(stage.energy_kwh * 2.0)
    assert impact.gwp_g == pytest.approx(36.0 * stage.duration_s / 3600) and impact.pe_mj is None
    for record in details["rounds"]:
        for site in ("north", "south"):
            assert record["loss_after"][site] < record["loss_before"][site]
    # The handler told the worker where to send the sites, and no rows went with it.
    assert sites.announcements[0]["address"].startswith("127.0.0.1:")
    announced = json.dumps(sites.announcements)
    assert not any(row["text"] in announced for index in range(3) for row in site_rows(index))
    # The averaged weights are in the model, and they moved.
    after = result.torch_model.state_dict()
    assert any(not torch.equal(after[name], value) for name, value in before.items() if value.is_floating_point())
    assert [event["round"] for event in sites.events["north"] if event["event"] == "round"] == [1, 2]
    # The pruned zeros stayed zero: each site trained that matrix under its mask; the rest moved.
    assert torch.equal(after[PRUNED].view(-1)[::2], torch.zeros_like(after[PRUNED].view(-1)[::2]))
    assert bool((after[PRUNED].view(-1)[1::2] != before[PRUNED].view(-1)[1::2]).any())
    assert context.placement == {"training": "sites (cpu)", "aggregation": "cpu"}


def test_fedprox_and_a_site_that_drops_out_mid_round(tiny_models, tmp_path, site_datasets):
    params = {
        "sites": [{"site": site, "dataset_id": site} for site in ("north", "south", "east")],
        "min_sites_per_round": 2, "aggregation": "fedprox", "proximal_mu": 0.1,
    }
    _, _, context, _ = run_step(params, tiny_models, tmp_path, site_datasets, kill_in_round={"east": 1})
    rounds = context.details["rounds"]
    assert [record["sites"] for record in rounds] == [["north", "south"], ["north", "south"]]
    assert rounds[0]["dropped"] == ["east"]
    assert context.details["dropped"] == ["east"]
    assert context.details["aggregation"] == "fedprox"


def test_fedavgm_steps_along_the_average_s_change_at_the_server_s_rate(tiny_models, tmp_path, site_datasets):
    """One round: fedavg lands on the sites' average; fedavgm with server_lr 2 goes twice as far from the start
    along the same change (the sites train the same way in both runs: same seeds, one thread each)."""
    start = damaged_state(tiny_models["encoder"]).torch_model.state_dict()
    two_sites = {"sites": [{"site": "north", "dataset_id": "d1"}, {"site": "south", "dataset_id": "d2"}], "rounds": 1}
    _, averaged, _, _ = run_step(two_sites, tiny_models, tmp_path / "fedavg", site_datasets)
    server = {"aggregation": "fedavgm", "server_lr": 2.0, "server_momentum": 0.0}
    _, stepped, context, _ = run_step({**two_sites, **server}, tiny_models, tmp_path / "fedavgm", site_datasets)
    assert context.details["aggregation"] == "fedavgm" and context.details["server_lr"] == 2.0
    averaged, stepped = averaged.torch_model.state_dict(), stepped.torch_model.state_dict()
    moved = [name for name, value in start.items() if value.is_floating_point() and not torch.equal(averaged[name], value)]
    assert moved
    for name in moved:
        assert torch.allclose(stepped[name] - start[name], 2 * (averaged[name] - start[name]), atol=1e-5), name
    # The pruned zeros moved by twice nothing.
    assert torch.equal(stepped[PRUNED].view(-1)[::2], torch.zeros_like(stepped[PRUNED].view(-1)[::2]))


def classical_rdp_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """The textbook bound for the Gaussian mechanism composed `rounds` times: min over alpha of
    rounds x alpha / (2 z^2) + log(1/delta) / (alpha - 1). dp-accounting's conversion is a little tighter."""
    return min(rounds * alpha / (2 * noise_multiplier**2) + math.log(1 / delta) / (alpha - 1)
               for alpha in (1 + step / 100 for step in range(1, 10_000)))


def test_differential_privacy_clips_every_site_noises_what_sites_train_and_counts_epsilon(
    tiny_models, tmp_path, site_datasets
):
    start = damaged_state(tiny_models["encoder"]).torch_model.state_dict()
    dp = {"noise_multiplier": 0.5, "clipping_norm": 0.05, "delta": 1e-5}
    params = {"sites": [{"site": "north", "dataset_id": "d1"}, {"site": "south", "dataset_id": "d2"}],
              "differential_privacy": dp}
    _, result, context, _ = run_step(params, tiny_models, tmp_path, site_datasets)
    privacy = context.details["differential_privacy"]
    assert {name: privacy[name] for name in dp} == dp
    # Two rounds of z = 0.5: within the textbook bound, and above what one round would spend.
    bound = classical_rdp_epsilon(0.5, 2, 1e-5)
    assert 0.8 * bound < privacy["epsilon"] <= bound
    assert classical_rdp_epsilon(0.5, 1, 1e-5) < 0.8 * bound
    # Each site's change is far above 0.05 at this rate: every one was clipped, every round.
    assert privacy["clipped"] == {"1": ["north", "south"], "2": ["north", "south"]}
    assert privacy["noise_std_per_round"] == pytest.approx([0.5 * 0.05 / 2] * 2)
    for record in context.details["rounds"]:
        assert all(norm > 0.05 for norm in record["privacy"]["update_norms"].values())
    after = result.torch_model.state_dict()
    # Noise on what the sites train, none on the token embeddings they keep frozen, nor on pruned zeros.
    embeddings = "embeddings.word_embeddings.weight"
    assert torch.equal(after[embeddings], start[embeddings])
    assert not torch.equal(after["encoder.layer.0.attention.self.query.weight"],
                           start["encoder.layer.0.attention.self.query.weight"])
    assert torch.equal(after[PRUNED].view(-1)[::2], torch.zeros_like(after[PRUNED].view(-1)[::2]))


def test_half_precision_transfer_halves_the_bytes_and_adds_each_site_s_change_to_float32_weights(
    tiny_models, tmp_path, site_datasets
):
    start = damaged_state(tiny_models["encoder"]).torch_model.state_dict()
    params = {"sites": [{"site": "north", "dataset_id": "d1"}, {"site": "south", "dataset_id": "d2"}],
              "transfer_precision": "float16"}
    _, result, context, _ = run_step(params, tiny_models, tmp_path, site_datasets)
    details = context.details
    # Every floating-point tensor, two bytes each, to two sites and back, in each of two rounds.
    half = sum(value.numel() * 2 for value in start.values() if value.is_floating_point())
    assert details["transfer_precision"] == "float16"
    assert details["bytes_sent_to_sites"] == details["bytes_received_from_sites"] == half * 2 * 2
    after = result.torch_model.state_dict()
    assert all(value.dtype == torch.float32 for value in after.values() if value.is_floating_point())
    # The sites' changes were added to the weights (had they been taken for the weights, all would be near 0).
    query = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(after[query], start[query])
    assert torch.allclose(after[query], start[query], atol=0.1)
    # The frozen embeddings no site changes stay exactly the float32 ones (not rounded to half precision),
    # and the pruned zeros stay zero.
    embeddings = "embeddings.word_embeddings.weight"
    assert torch.equal(after[embeddings], start[embeddings])
    assert not torch.equal(start[embeddings], start[embeddings].half().float())
    assert torch.equal(after[PRUNED].view(-1)[::2], torch.zeros_like(after[PRUNED].view(-1)[::2]))
    for record in details["rounds"]:
        assert all(record["loss_after"][site] < record["loss_before"][site] for site in record["sites"])


@pytest.mark.parametrize(("params", "message"), [
    ({"server_momentum": 0.5}, "server_momentum apply to aggregation fedavgm only, not fedavg"),
    ({"aggregation": "fedprox", "server_lr": 2.0}, "server_lr apply to aggregation fedavgm only, not fedprox"),
    ({"aggregation": "fedavgm", "server_momentum": 1.0}, "less than 1"),
    ({"lr_schedule": "cosine"}, "'per_round' or 'across_rounds'"),
    ({"differential_privacy": {"noise_multiplier": 1.0}}, "differential_privacy.clipping_norm"),
    ({"differential_privacy": {"noise_multiplier": 0, "clipping_norm": 1.0}}, "greater than 0"),
])
def test_server_and_schedule_params_that_cannot_apply_are_refused(params, message):
    with pytest.raises(ValidationError, match=message):
        FederatedConfig(sites=[{"site": "north", "dataset_id": "d1"}], **params)


@pytest.mark.parametrize("params", [{}, {"aggregation": "fedavgm"}, {"aggregation": "fedavgm", "server_lr": 2.0},
                                    {"differential_privacy": {"noise_multiplier": 1.0, "clipping_norm": 0.5}}])
def test_a_config_dumped_by_the_api_validates_again_in_the_engine(params):
    config = FederatedConfig(sites=[{"site": "north", "dataset_id": "d1"}], **params)
    assert FederatedConfig.model_validate(json.loads(config.model_dump_json())) == config


def test_fewer_sites_than_min_sites_per_round_fail_the_step(tiny_models, tmp_path, site_datasets):
    params = {"sites": [{"site": "north", "dataset_id": "d1"}, {"site": "south", "dataset_id": "d2"}]}
    with pytest.raises(EngineUserError, match="min_sites_per_round is 2"):
        run_step(params, tiny_models, tmp_path, site_datasets, kill_in_round={"south": 1})


def test_a_site_that_never_connects_is_named(tiny_models, tmp_path, site_datasets):
    params = {
        "sites": [{"site": "north", "dataset_id": "d1"}, {"site": "west", "dataset_id": "d9"}],
        "connect_timeout_s": 20,
    }
    # No dataset for west: its client is never started, as when its worker is down.
    model_dir = tiny_models["encoder"]
    sites = LocalSites(tmp_path / "sites", model_dir, {"north": site_datasets["north"]})
    context = StepContext(
        work_dir=tmp_path / "step", device="cpu", tokenizer=load_tokenizer(model_dir), sequence_length=32, announce=sites,
    )
    context.work_dir.mkdir()
    try:
        with pytest.raises(EngineUserError, match=r"1 of 2 sites connected within 20 s \(west did not\)"):
            apply_federated(FederatedConfig(**{**FAST, **params}), damaged_state(model_dir), context)
    finally:
        sites.stop()
