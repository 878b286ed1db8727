"""A goal job through a real API process and a real Celery worker on Postgres and Redis: the search runs
in the worker's engine, the job's recipe becomes the chosen one, and any candidate re-runs as a job."""

import json
from pathlib import Path

import pytest

from tests.archives import zip_folder
from tests.factories import build_tiny_model
from tests.integration import harness


@pytest.fixture(scope="module")
def service(database, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    with harness.distributed_service(logs) as client:
        yield client


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "texts.jsonl"
    rows = [{"text": f"sentence {i} about the {topic} and what it means"}
            for i, topic in enumerate(["weather", "sports", "finance", "travel"] * 20)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_a_goal_job_searches_ships_the_choice_and_reruns_a_candidate(service, dataset, tmp_path):
    client = service
    model = harness.upload(client, "/v1/models", zip_folder(build_tiny_model("encoder", tmp_path / "m"),
                                                            tmp_path / "m.zip"), "encoder")
    data = harness.upload(client, "/v1/datasets", dataset, "texts")
    goal = {"min_fidelity": 0.99, "objective": "smallest", "max_candidates": 4, "search_rows": 40,
            "families": ["half", "int8", "cluster"], "budget_minutes": 10}
    response = client.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": data["id"], "goal": goal,
                                             "evaluation": {"max_samples": 40}})
    assert response.status_code == 202, response.text
    submitted = response.json()
    assert submitted["recipe"] == {"steps": []} and submitted["preflight"]["search_rows"] == 40

    job = harness.wait_for_status(client, submitted["id"], harness.FINISHED, timeout=300)
    assert job["status"] == "succeeded", job
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    search = report["search"]
    chosen = next(c for c in search["candidates"] if c["chosen"])
    assert len(search["candidates"]) == 4
    assert job["recipe"] == report["job"]["recipe"] == chosen["recipe"]
    assert [step["technique"] for step in job["progress"]["steps"]] == [s["technique"] for s in chosen["recipe"]["steps"]]
    assert all(step["state"] == "done" for step in job["progress"]["steps"])
    assert report["evaluation"]["num_samples"] == 40 and search["search_rows"] == 40
    assert {artifact["kind"] for artifact in job["artifacts"]} == {"model", "report"}
    logs = client.get(f"/v1/jobs/{job['id']}/logs", params={"limit": 1000}).json()["lines"]
    assert any("search: candidate 1" in line["message"] for line in logs)

    # Any point of the front runs again as an ordinary job.
    other = next(c for c in search["candidates"] if not c["chosen"])
    again = client.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": data["id"], "recipe": other["recipe"]})
    assert again.status_code == 202, again.text
    rerun = harness.wait_for_status(client, again.json()["id"], harness.FINISHED, timeout=300)
    assert rerun["status"] == "succeeded" and rerun["goal"] is None and rerun["recipe"] == other["recipe"]
