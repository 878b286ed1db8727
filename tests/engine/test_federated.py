"""The federated step with real processes: Flower's coordinator started by the handler, and one site client
per site started when the handler announces its address, each reading only its own dataset file. Sites
that drop out mid-round are tolerated down to min_sites_per_round, and not below."""

import json
import os
import random
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import torch

from tests.engine.test_finetune import TOPIC_WORDS, FILLER
from workers.engine.errors import EngineUserError
from workers.engine.federated.config import FederatedConfig
from workers.engine.federated.handler import REPOSITORY_ROOT, apply_federated, default_federated_python
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


class Sites:
    """Starts a site client per site when the handler announces the federation, as a site worker would."""

    def __init__(self, tmp_path: Path, teacher_dir: Path, datasets: dict[str, Path], kill_after_round: dict | None = None):
        self.tmp_path, self.teacher_dir, self.datasets = tmp_path, teacher_dir, datasets
        self.kill_after_round = kill_after_round or {}
        self.processes: dict[str, subprocess.Popen] = {}
        self.events: dict[str, list[dict]] = {}
        self.announcements: list[dict] = []

    def __call__(self, event: dict) -> None:
        self.announcements.append(event)
        for entry in event["sites"]:
            site = entry["site"]
            spec = {
                "server_address": event["address"], "token": event["token"], "site": site,
                "teacher_dir": str(self.teacher_dir), "task": event["task"],
                "dataset_path": str(self.datasets[site]), "connect_timeout_s": 60,
            }
            spec_path = self.tmp_path / f"site-{site}.json"
            spec_path.write_text(json.dumps(spec))
            process = subprocess.Popen(
                [str(default_federated_python()), "-m", "workers.engine.federated.site_client", "--spec", str(spec_path)],
                stdout=subprocess.PIPE, stderr=(self.tmp_path / f"site-{site}.log").open("w"), text=True,
                cwd=REPOSITORY_ROOT, env={**os.environ, "PYTHONPATH": str(REPOSITORY_ROOT)},
            )
            self.processes[site] = process
            self.events[site] = []
            threading.Thread(target=self._follow, args=(site, process), daemon=True).start()

    def _follow(self, site: str, process: subprocess.Popen) -> None:
        for line in process.stdout:
            event = json.loads(line)
            self.events[site].append(event)
            if event["event"] == "round" and self.kill_after_round.get(site) == event["round"]:
                process.send_signal(signal.SIGKILL)  # trained, but the weights never reach the coordinator

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def site_datasets(tmp_path) -> dict[str, Path]:
    paths = {}
    for index, site in enumerate(["north", "south", "east"]):
        path = tmp_path / f"{site}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in site_rows(index)))
        paths[site] = path
    return paths


def run_step(params: dict, tiny_models, tmp_path, site_datasets, kill_after_round=None):
    model_dir = tiny_models["encoder"]
    state = damaged_state(model_dir)
    sites = Sites(tmp_path, model_dir, site_datasets, kill_after_round)
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
    _, result, context, sites = run_step(sites_params, tiny_models, tmp_path, site_datasets)

    details = context.details
    assert details["rounds_completed"] == 2 and details["dropped"] == []
    assert details["sites_in_last_round"] == ["north", "south"]
    assert details["examples_per_site"] == {"north": 24, "south": 24}
    assert details["bytes_sent_to_sites"] == details["bytes_received_from_sites"] > 0
    for record in details["rounds"]:
        for site in ("north", "south"):
            assert record["loss_after"][site] < record["loss_before"][site]
    # The handler told the worker where to send the sites, and no rows went with it.
    assert sites.announcements[0]["address"].startswith("127.0.0.1:")
    assert "north" not in json.dumps(sites.announcements) or all("text" not in entry for entry in sites.announcements)
    # The averaged weights are in the model, and they moved.
    after = result.torch_model.state_dict()
    assert any(not torch.equal(after[name], value) for name, value in before.items() if value.is_floating_point())
    assert [event["round"] for event in sites.events["north"] if event["event"] == "round"] == [1, 2]
    # The pruned zeros stayed zero: each site trained that matrix under its mask; the rest moved.
    assert torch.equal(after[PRUNED].view(-1)[::2], torch.zeros_like(after[PRUNED].view(-1)[::2]))
    assert bool((after[PRUNED].view(-1)[1::2] != before[PRUNED].view(-1)[1::2]).any())
    assert context.placement == {"training": "sites", "aggregation": "cpu"}


def test_fedprox_and_a_site_that_drops_out_mid_round(tiny_models, tmp_path, site_datasets):
    params = {
        "sites": [{"site": site, "dataset_id": site} for site in ("north", "south", "east")],
        "min_sites_per_round": 2, "aggregation": "fedprox", "proximal_mu": 0.1,
    }
    _, _, context, _ = run_step(params, tiny_models, tmp_path, site_datasets, kill_after_round={"east": 1})
    rounds = context.details["rounds"]
    assert [record["sites"] for record in rounds] == [["north", "south"], ["north", "south"]]
    assert rounds[0]["dropped"] == ["east"]
    assert context.details["dropped"] == ["east"]
    assert context.details["aggregation"] == "fedprox"


def test_fewer_sites_than_min_sites_per_round_fail_the_step(tiny_models, tmp_path, site_datasets):
    params = {"sites": [{"site": "north", "dataset_id": "d1"}, {"site": "south", "dataset_id": "d2"}]}
    with pytest.raises(EngineUserError, match="min_sites_per_round is 2"):
        run_step(params, tiny_models, tmp_path, site_datasets, kill_after_round={"south": 1})


def test_a_site_that_never_connects_is_named(tiny_models, tmp_path, site_datasets):
    params = {
        "sites": [{"site": "north", "dataset_id": "d1"}, {"site": "west", "dataset_id": "d9"}],
        "connect_timeout_s": 20,
    }
    # No dataset for west: its client is never started, as when its worker is down.
    datasets = {"north": site_datasets["north"]}
    model_dir = tiny_models["encoder"]

    class NorthOnly(Sites):
        def __call__(self, event):
            super().__call__({**event, "sites": [entry for entry in event["sites"] if entry["site"] == "north"]})

    sites = NorthOnly(tmp_path, model_dir, datasets)
    context = StepContext(
        work_dir=tmp_path / "step", device="cpu", tokenizer=load_tokenizer(model_dir), sequence_length=32, announce=sites,
    )
    context.work_dir.mkdir()
    try:
        with pytest.raises(EngineUserError, match=r"1 of 2 sites connected within 20 s \(west did not\)"):
            apply_federated(FederatedConfig(**{**FAST, **params}), damaged_state(model_dir), context)
    finally:
        sites.stop()
