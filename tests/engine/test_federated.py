"""The federated step with real processes: Flower's coordinator started by the handler, and one site client
per site started when the handler announces its address, each reading only its own dataset file. Sites
that drop out mid-round are tolerated down to min_sites_per_round, and not below."""

import json
import random
import signal
from pathlib import Path

import pytest
import torch

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


@pytest.fixture
def site_datasets(tmp_path) -> dict[str, Path]:
    paths = {}
    for index, site in enumerate(["north", "south", "east"]):
        path = tmp_path / f"{site}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in site_rows(index)))
        paths[site] = path
    return paths


def run_step(params: dict, tiny_models, tmp_path, site_datasets, kill_in_round=None, energy=None):
    model_dir = tiny_models["encoder"]
    state = damaged_state(model_dir)
    sites = LocalSites(tmp_path / "sites", model_dir, site_datasets, killer(kill_in_round or {}), energy=energy)
    context = StepContext(
        work_dir=tmp_path / "step", device="cpu", tokenizer=load_tokenizer(model_dir), sequence_length=32,
        announce=sites,
    )
    context.work_dir.mkdir()
    config = FederatedConfig(**FAST, **params)
    try:
        return state, apply_federated(config, state, context), context, sites
    finally:
        sites.stop()


def test_two_sites_train_the_model_and_only_weights_move(tiny_models, tmp_path, site_datasets):
    before = {name: value.clone() for name, value in damaged_state(tiny_models["encoder"]).torch_model.state_dict().items()}
    sites_params = {"sites": [{"site": "north", "dataset_id": "d1"}, {"site": "south", "dataset_id": "d2"}]}
    # North measures its energy on its own grid (its worker's settings); south has no meter.
    energy = {"north": {"country": "FRA"}}
    _, result, context, sites = run_step(sites_params, tiny_models, tmp_path, site_datasets, energy=energy)

    details = context.details
    assert details["rounds_completed"] == 2 and details["dropped"] == []
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
