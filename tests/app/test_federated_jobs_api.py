"""Submitting a job with a federated step: each site it lists must hold the dataset named beside it."""

import pytest

from tests.app.conftest import upload
from tests.app.test_sites_api import register

PRUNE = {"technique": "prune", "params": {"structure": "unstructured", "sparsity": 0.5}}
QUANTIZE = {"technique": "quantize", "params": {"scheme": "int8_dynamic"}}


def federated_recipe(*sites: tuple[str, str]) -> dict:
    """Prune, recover on the sites' data, then quantize: the federated step is step 1."""
    return {"steps": [PRUNE, {"technique": "federated", "params": {
        "sites": [{"site": site, "dataset_id": dataset_id} for site, dataset_id in sites], "rounds": 1,
    }}, QUANTIZE]}


@pytest.fixture
def model_id(client, tiny_encoder_zip) -> str:
    return upload(client, tiny_encoder_zip).json()["id"]


def test_a_federated_step_on_its_sites_datasets_is_queued(client, model_id):
    first = register(client, site="clinic-a").json()["id"]
    second = register(client, site="clinic-b").json()["id"]
    response = client.post("/v1/jobs", json={
        "model_id": model_id, "device": "cpu", "recipe": federated_recipe(("clinic-a", first), ("clinic-b", second)),
    })
    assert response.status_code == 202, response.text
    step = response.json()["recipe"]["steps"][1]
    assert step["technique"] == "federated"
    assert step["params"]["sites"] == [
        {"site": "clinic-a", "dataset_id": first}, {"site": "clinic-b", "dataset_id": second}
    ]
    # While a queued job trains on it, the site dataset stays.
    assert client.delete(f"/v1/datasets/{first}").status_code == 409


def test_a_dataset_held_by_another_site_is_a_422_on_the_steps_sites(client, model_id):
    other_site = register(client, site="clinic-b").json()["id"]
    held_here = register(client, site="clinic-a").json()["id"]
    response = client.post("/v1/jobs", json={
        "model_id": model_id, "recipe": federated_recipe(("clinic-a", held_here), ("clinic-c", other_site)),
    })
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["loc"] == ["body", "recipe", "steps", 1, "params", "sites"]
    assert error["msg"] == f"dataset {other_site} is held by site clinic-b, not by site clinic-c"
    assert response.json()["detail"].startswith("Recipe step 1 (federated): ")


def test_a_dataset_uploaded_here_or_unknown_is_a_422(client, model_id, tmp_path):
    path = tmp_path / "central.jsonl"
    path.write_text('{"text": "uploaded here"}\n', encoding="utf-8")
    central = upload(client, path, route="/v1/datasets").json()["id"]
    response = client.post("/v1/jobs", json={
        "model_id": model_id, "recipe": federated_recipe(("clinic-a", central), ("clinic-b", "no-such-dataset")),
    })
    assert response.status_code == 422, response.text
    first, second = response.json()["errors"]
    assert first["loc"] == second["loc"] == ["body", "recipe", "steps", 1, "params", "sites"]
    assert f"dataset {central} was uploaded here, not registered by a site" in first["msg"]
    assert second["msg"].startswith("dataset no-such-dataset not found: register it at site clinic-b")
    assert client.get("/v1/jobs").json()["items"] == []


def test_server_params_without_fedavgm_and_dp_without_a_clipping_norm_are_422s_that_say_what_to_fix(client, model_id):
    site_dataset = register(client, site="clinic-a").json()["id"]
    recipe = federated_recipe(("clinic-a", site_dataset))
    recipe["steps"][1]["params"].update(server_momentum=0.5, differential_privacy={"noise_multiplier": 1.0})
    response = client.post("/v1/jobs", json={"model_id": model_id, "recipe": recipe})
    assert response.status_code == 422, response.text
    messages = {(tuple(error["loc"]), error["msg"]) for error in response.json()["errors"]}
    assert any(loc[-2:] == ("differential_privacy", "clipping_norm") and msg == "Field required" for loc, msg in messages)
    # Fixed, the server's momentum still needs fedavgm.
    recipe["steps"][1]["params"]["differential_privacy"]["clipping_norm"] = 0.5
    response = client.post("/v1/jobs", json={"model_id": model_id, "recipe": recipe})
    assert response.status_code == 422, response.text
    assert "server_momentum apply to aggregation fedavgm only, not fedavg" in response.text
    recipe["steps"][1]["params"]["aggregation"] = "fedavgm"
    response = client.post("/v1/jobs", json={"model_id": model_id, "recipe": recipe})
    assert response.status_code == 202, response.text
    assert response.json()["recipe"]["steps"][1]["params"]["differential_privacy"]["clipping_norm"] == 0.5
