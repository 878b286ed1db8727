"""A goal job's search, resumed for real: the worker is SIGKILLed once the search has stored a checkpoint
after its second candidate or later; the next attempt measures none of those candidates again, and
storage never holds more than the newest of the search's checkpoints once it is written."""

from tests.faults.cluster import Cluster, job_state, kill, wait_until
from tests.faults.test_resume import stored_steps
from tests.integration import harness

GOAL = {"min_fidelity": 0.9, "objective": "smallest", "families": ["half", "int8", "int4", "cluster"],
        "max_candidates": 16, "search_rows": 64, "budget_minutes": 10}
# Slow latency runs make each candidate last long enough to kill the search between two of them.
EVALUATION = {"max_samples": 16, "sequence_length": 128, "latency_batch_sizes": [32], "latency_warmup": 1,
              "latency_repeats": 10, "energy_repeats": 2}


def test_a_killed_goal_job_resumes_its_search_after_the_candidates_already_measured(database, tmp_path,
                                                                                   model_archive):
    cluster = Cluster(tmp_path, {"COMPRESSO_MAX_ATTEMPTS": "3"})
    try:
        cluster.start_api()
        worker = cluster.start_worker()
        with cluster.client() as client:
            model = harness.upload(client, "/v1/models", model_archive, "tiny")
            response = client.post("/v1/jobs", json={
                "model_id": model["id"], "goal": {**GOAL, "latency_batch_size": 32}, "device": "cpu",
                "evaluation": EVALUATION,
            })
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]

            def searched_two() -> bool:
                steps = stored_steps(job_id)
                return job_state(client, job_id)["status"] == "running" and bool(steps) and max(steps) >= 2

            wait_until(searched_two, timeout=180)
            # Each checkpoint replaces the one before it: once the newest is stored, the older ones go.
            wait_until(lambda: len(stored_steps(job_id)) == 1, timeout=30)
            saved = max(stored_steps(job_id))
            kill(worker)
            cluster.start_worker()

            job = harness.wait_for_status(client, job_id, harness.FINISHED, timeout=300)
            lines = [line["message"] for line in
                     client.get(f"/v1/jobs/{job_id}/logs", params={"limit": 1000}).json()["lines"]]
            assert job["status"] == "succeeded", (job["error"], lines[-20:])
            assert job["attempts"] == 2
            resumed_at = next(int(line.split()[3]) for line in lines
                              if line.startswith("resuming after step") and "attempt 1 saved" in line)
            assert resumed_at >= saved
            report = client.get(f"/v1/jobs/{job_id}/report").json()
            checkpoints = report["job"]["checkpoints"]
            assert checkpoints["attempt"] == 2 and checkpoints["resumed_from_attempt"] == 1
            assert checkpoints["resumed_steps"] == list(range(1, resumed_at + 1))
            # Attempt 2 measured only the candidates after those; every candidate is in the report once.
            assert [item["step"] for item in checkpoints["saved"]] == list(
                range(resumed_at + 1, len(report["search"]["candidates"]) + 1))
            assert [c["number"] for c in report["search"]["candidates"]] == list(
                range(1, len(report["search"]["candidates"]) + 1))
            wait_until(lambda: not stored_steps(job_id), timeout=10)
    finally:
        cluster.stop_all()
