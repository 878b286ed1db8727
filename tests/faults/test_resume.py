"""Resumable jobs, for real: a worker SIGKILLed during step 3 of a 3-step recipe; the next attempt resumes
after step 2 instead of running steps 1 and 2 again; a checkpoint damaged in storage is caught by its
sha256 and computed again; and once the job has ended its checkpoints are gone."""

from sqlalchemy import func, select

from app.checkpoints.orm import JobCheckpoint
from app.config import get_settings
from app.core.storage import storage_for
from app.db.session import session_scope
from tests.faults.cluster import STEADY_EVALUATION, Cluster, job_state, kill, submit, wait_until
from tests.integration import harness

# Steps 1 and 2 take a moment; step 3 trains long enough on the tiny model to be killed in.
RECIPE = {"steps": [
    {"technique": "prune", "params": {"structure": "unstructured", "sparsity": 0.3}},
    {"technique": "prune", "params": {"structure": "neurons", "sparsity": 0.25}},
    {"technique": "prune", "params": {"structure": "unstructured", "sparsity": 0.5,
                                      "recover": {"max_steps": 1000, "batch_size": 4}}},
]}


def stored_steps(job_id: str) -> dict[int, JobCheckpoint]:
    with session_scope() as session:
        rows = session.scalars(select(JobCheckpoint).where(JobCheckpoint.job_id == job_id)).all()
        session.expunge_all()
    return {row.step: row for row in rows}


def steps_started(client, job_id: str, attempt: int) -> list[str]:  # noqa: ANN001
    """The steps the attempt's engine logged starting, e.g. ["2/3", "3/3"]."""
    lines = client.get(f"/v1/jobs/{job_id}/logs", params={"limit": 1000}).json()["lines"]
    return [line["message"].split("step ")[1][:3] for line in lines
            if line["attempt"] == attempt and line["source"] == "engine" and "workers.engine.steps" in line["message"]
            and "/3: " in line["message"]]


def kill_during_step_3(cluster: Cluster, client, worker, job_id: str, attempt: int):  # noqa: ANN001, ANN201
    """Waits until this attempt runs step 3, with step 2's checkpoint stored by it and the engine's lines so far
    in the job's log, then SIGKILLs the worker."""
    def in_step_3() -> bool:
        state = job_state(client, job_id)
        step_2 = stored_steps(job_id).get(2)
        return (state["attempts"] == attempt and (state["progress"]["stage"] or "").startswith("step_3.")
                and step_2 is not None and step_2.attempt == attempt and "3/3" in steps_started(client, job_id, attempt))

    # Steps 1 and 2 take well under a minute alone; the bound leaves room for a CI machine whose two cores
    # also run the engine's tests beside this one.
    wait_until(in_step_3, timeout=360)
    kill(worker)
    return cluster.start_worker()


def test_a_killed_job_resumes_after_its_last_checkpoint_and_a_damaged_one_is_recomputed(database, tmp_path, model_archive):
    cluster = Cluster(tmp_path, {"COMPRESSO_MAX_ATTEMPTS": "3"})
    try:
        cluster.start_api()
        worker = cluster.start_worker()
        with cluster.client() as client:
            job_id = submit(client, model_archive, recipe=RECIPE, evaluation={**STEADY_EVALUATION, "latency_repeats": 20})
            worker = kill_during_step_3(cluster, client, worker, job_id, attempt=1)

            # Damage step 2's stored checkpoint: attempt 2 must find out, delete it, and resume after step 1.
            storage = storage_for(get_settings())
            damaged = stored_steps(job_id)[2]
            path = storage.local_path(damaged.storage_key)
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))
            worker = kill_during_step_3(cluster, client, worker, job_id, attempt=2)

            # Step 3 and the evaluation, on a CI machine whose other core runs the engine's tests (seen: 235 s).
            job = harness.wait_for_status(client, job_id, harness.FINISHED, timeout=480)
            lines = [line["message"] for line in
                     client.get(f"/v1/jobs/{job_id}/logs", params={"limit": 1000}).json()["lines"]]
            assert job["status"] == "succeeded", (job["error"], [line for line in lines if "step" in line][-20:])
            assert job["attempts"] == 3
            assert any(line.startswith("checkpoint after step 2 has sha256") and "it is deleted and not used" in line
                       for line in lines), lines
            assert "resuming after step 1 from the checkpoint attempt 1 saved" in lines
            assert "resuming after step 2 from the checkpoint attempt 2 saved" in lines

            report = client.get(f"/v1/jobs/{job_id}/report").json()
            # Attempt 3 ran step 3 only; step 1 was attempt 1's, step 2 attempt 2's (recomputed there).
            assert [step["resumed_from_attempt"] for step in report["steps"]] == [1, 2, None]
            assert report["job"]["checkpoints"]["resumed_steps"] == [1, 2]
            assert report["job"]["checkpoints"]["attempt"] == 3
            assert [step["resumed_from_attempt"] for step in job_state(client, job_id)["progress"]["steps"]] == [1, 2, None]
            page = client.get(f"/jobs/{job_id}").text
            assert "restored from attempt 1's checkpoint" in page and "restored from attempt 2's checkpoint" in page
            # What each attempt's engine ran: attempt 2 resumed after step 1, attempt 3 after step 2.
            assert steps_started(client, job_id, 1) == ["1/3", "2/3", "3/3"]
            assert steps_started(client, job_id, 2) == ["2/3", "3/3"]
            assert steps_started(client, job_id, 3) == ["3/3"]
            # The energy of every attempt is the job's: each attempt's load, and each step once.
            stages = [stage["stage"] for stage in report["energy"]["stages"]]
            if report["energy"]["method"] not in ("unavailable", "disabled"):
                assert {"attempt_1.load", "attempt_2.load", "load"} <= set(stages)
                assert [stage for stage in stages if stage.startswith("step_")] == [
                    "step_1.prune", "step_2.prune", "step_3.prune"]

            # The job has ended: no checkpoint is left, in the table or in storage.
            wait_until(lambda: not stored_steps(job_id), timeout=10)
            assert not storage.exists(f"checkpoints/{job_id}")
            with session_scope() as session:
                assert session.scalar(select(func.count()).select_from(JobCheckpoint)
                                      .where(JobCheckpoint.job_id == job_id)) == 0
    finally:
        cluster.stop_all()
