"""Goal jobs at submit: one of recipe, preset or goal; a goal that cannot fit its model, its data or its
budget is a 422 that says why, before any compute; an accepted one carries its pre-flight estimate."""

import json

from tests.app.conftest import upload

GOAL = {"min_fidelity": 0.99, "objective": "smallest", "budget_minutes": 10}


def submit_goal(client, model_id, goal=GOAL, **extra):
    return client.post("/v1/jobs", json={"model_id": model_id, "goal": goal, **extra})


def test_a_goal_job_is_queued_with_its_estimate(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    response = submit_goal(client, model_id)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["recipe"] == {"steps": []} and job["progress"]["steps"] == []
    assert job["goal"]["min_fidelity"] == 0.99 and job["goal"]["budget_minutes"] == 10
    preflight = job["preflight"]
    assert 0 < preflight["expected_seconds"] <= 600 and preflight["peak_rss_mb"] > 0
    # No dataset: the builtin sample's 320 texts, split between the search and the held-out measurement.
    assert preflight["search_rows"] + preflight["evaluation_rows"] == 320
    assert set(preflight["family_seconds"]) >= {"half", "int8", "cluster", "distill_int8"}
    assert client.get(f"/v1/jobs/{job['id']}").json()["preflight"] == preflight


def test_recipe_preset_and_goal_exclude_each_other(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    both = client.post("/v1/jobs", json={"model_id": model_id, "goal": GOAL, "preset": "small"})
    assert both.status_code == 422 and "exactly one of recipe" in both.json()["detail"]
    neither = client.post("/v1/jobs", json={"model_id": model_id})
    assert neither.status_code == 422


def test_a_goal_without_a_quality_floor_or_with_unknown_fields_is_refused(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    no_floor = submit_goal(client, model_id, {"objective": "smallest"})
    assert no_floor.status_code == 422 and "quality floor" in json.dumps(no_floor.json())
    unknown = submit_goal(client, model_id, {**GOAL, "speed": "max"})
    assert unknown.status_code == 422
    family = submit_goal(client, model_id, {**GOAL, "families": ["gzip"]})
    assert family.status_code == 422 and "cluster" in json.dumps(family.json())


def test_a_budget_nothing_fits_in_is_refused_with_the_time_it_needs(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    response = submit_goal(client, model_id, {**GOAL, "budget_minutes": 0.0001})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["errors"][0]["loc"] == ["body", "goal", "budget_minutes"]
    assert "no candidate family fits" in body["detail"] and "the budget is" in body["detail"]


def test_a_short_budget_drops_the_training_families_and_says_so(client, tiny_encoder_zip, tmp_path):
    from app.jobs.goal import worker_threads
    from workers.engine.search.estimate import (
        Workload, candidate_seconds, fixed_seconds, representative, static_seconds_per_row,
    )
    from workers.engine.search.goal import Goal
    from workers.engine.search.space import quick_rung
    from workers.engine.target import Target

    model = upload(client, tiny_encoder_zip).json()
    rows = [{"text": f"sentence {i} " + "word " * 20} for i in range(20_016)]
    dataset = tmp_path / "many.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data_id = upload(client, dataset, route="/v1/datasets").json()["id"]
    # A budget between what the cheapest family and a distillation's quick rung need, by the same estimate.
    speed = static_seconds_per_row(model["num_parameters"], 128, worker_threads())
    work = Workload(model["num_parameters"], model["size_bytes"], 20_000, 16, speed)
    half = candidate_seconds(representative("half", Goal(**GOAL), Target()), work, (1,))
    distill = candidate_seconds(quick_rung(representative("distill_int8", Goal(**GOAL), Target()), Target()), work, (1,))
    budget_seconds = fixed_seconds(work) + (half + distill) / 2
    goal = {**GOAL, "search_rows": 20_000, "budget_minutes": budget_seconds / 60}
    response = submit_goal(client, model["id"], goal, dataset_id=data_id, evaluation={"max_samples": 16})
    assert response.status_code == 202, response.text
    dropped = response.json()["preflight"]["dropped"]
    assert "distill_int8" in dropped and "seconds" in dropped["distill_int8"]
    assert "half" not in dropped


def test_a_budget_past_the_jobs_time_limit_is_refused(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    response = submit_goal(client, model_id, {**GOAL, "budget_minutes": 90}, time_limits={"soft_seconds": 3600})
    assert response.status_code == 422 and "soft time limit of 60 minutes" in response.json()["detail"]
    assert submit_goal(client, model_id, {**GOAL, "budget_minutes": 50}, time_limits={"soft_seconds": 3600}).status_code == 202


def test_an_accuracy_goal_needs_a_labelled_classifier(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    response = submit_goal(client, model_id, {"max_accuracy_drop": 0.01})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "goal", "max_accuracy_drop"]
    assert "classifier" in response.json()["detail"]


def test_a_causal_lm_goal_takes_a_perplexity_limit_and_the_torch_target(client, tiny_encoder_zip, tmp_path):
    from tests.archives import zip_folder
    from tests.factories import build_tiny_model

    lm_zip = zip_folder(build_tiny_model("causal-lm", tmp_path / "lm"), tmp_path / "lm.zip")
    lm_id = upload(client, lm_zip).json()["id"]
    goal = {"max_perplexity_increase": 0.01, "objective": "smallest", "budget_minutes": 10}
    torch_cpu = {"runtime": "torch", "device": "cpu"}
    accepted = submit_goal(client, lm_id, goal, target=torch_cpu)
    assert accepted.status_code == 202, accepted.text
    assert set(accepted.json()["preflight"]["family_seconds"]) >= {"llm_w4a16", "llm_fp8"}
    # The default target (onnxruntime) takes no llm_quantize checkpoint: every family is dropped, saying why.
    onnx = submit_goal(client, lm_id, goal)
    assert onnx.status_code == 422 and "runtime torch" in onnx.json()["detail"]
    accuracy = submit_goal(client, lm_id, {"max_accuracy_drop": 0.01}, target=torch_cpu)
    assert accuracy.status_code == 422
    assert accuracy.json()["errors"][0]["loc"] == ["body", "goal", "max_accuracy_drop"]
    encoder_id = upload(client, tiny_encoder_zip).json()["id"]
    perplexity = submit_goal(client, encoder_id, goal)
    assert perplexity.status_code == 422 and "causal language model" in perplexity.json()["detail"]
    assert perplexity.json()["errors"][0]["loc"] == ["body", "goal", "max_perplexity_increase"]


def test_the_goal_schema_and_families_are_listed(client):
    body = client.get("/v1/recipes/goal").json()
    assert "min_fidelity" in body["schema"]["properties"]
    families = {family["name"]: family for family in body["families"]}
    assert families["distill_int8"]["trains"] and not families["int8"]["trains"]
