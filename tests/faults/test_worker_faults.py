"""Faults injected for real into running compresso processes on Postgres and Redis: a worker killed
mid-job, an engine killed as the kernel's OOM killer would, and jobs past their time limits."""

import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.artifacts.orm import Artifact
from app.db.session import session_scope
from app.energy.orm import EnergyRecord
from tests.faults.cluster import (
    STEADY_EVALUATION, Cluster, engine_pids, job_state, kill, log_lines, submit, wait_until,
)
from tests.integration import harness


@pytest.fixture
def cluster(database, tmp_path):
    made = Cluster(tmp_path, {"COMPRESSO_MAX_ATTEMPTS": "2"})
    try:
        yield made
    finally:
        made.stop_all()


def running_engine(client, job_id: str) -> list[int]:
    """Waits until the job's engine is evaluating (well into the job) and returns its pids."""
    wait_until(lambda: (job_state(client, job_id)["progress"]["stage"] or "").startswith("evaluate_original"))
    return wait_until(lambda: engine_pids(job_id))


def alive(pid: int) -> bool:
    """Running, as opposed to gone, dead ("X") or a zombie ("Z": dead, waiting for an init that may
    never reap it). A process that is exiting has lost its command line before it becomes a zombie, so
    "no longer found by its command line" is not yet "dead": wait on this instead."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def counts(job_id: str) -> tuple[int, int]:
    with session_scope() as session:
        artifacts = session.scalar(select(func.count()).select_from(Artifact).where(Artifact.job_id == job_id))
        energy = session.scalar(select(func.count()).select_from(EnergyRecord).where(EnergyRecord.job_id == job_id))
        stages = session.scalar(select(func.count(func.distinct(EnergyRecord.stage))).where(EnergyRecord.job_id == job_id))
    assert energy == stages  # one row per stage: nothing counted twice
    return artifacts, energy


def test_a_worker_killed_mid_job_loses_nothing_and_the_job_finishes_once(cluster, model_archive):
    cluster.start_api()
    first = cluster.start_worker()
    with cluster.client() as client:
        job_id = submit(client, model_archive)
        engines = running_engine(client, job_id)
        # Every thread of the engine runs at the default COMPRESSO_ENGINE_NICE, below the API.
        for pid in engines:
            threads = list(Path(f"/proc/{pid}/task").iterdir())
            assert {int((thread / "stat").read_text().rsplit(")", 1)[1].split()[16]) for thread in threads} == {10}
            # Under autogroup scheduling, its session's group yields too, not only its threads within it.
            autogroup = Path(f"/proc/{pid}/autogroup")
            if autogroup.exists():
                assert autogroup.read_text().split()[-1] == "10"
        kill(first)
        # The engine dies with its worker (PR_SET_PDEATHSIG): no orphan keeps computing.
        wait_until(lambda: not engine_pids(job_id), timeout=10)
        wait_until(lambda: not any(alive(pid) for pid in engines), timeout=10)

        cluster.start_worker()
        job = harness.wait_for_status(client, job_id, harness.FINISHED, timeout=240)
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 2
        assert counts(job_id)[0] == 2  # one model.zip, one report.json
        assert counts(job_id)[1] > 0
        lines = log_lines(client, job_id)
        assert any(line.startswith("requeued: no heartbeat from the worker of attempt 1") for line in lines)
        assert lines[-1] == "succeeded: the model and report are stored"


def test_a_job_whose_worker_keeps_dying_fails_with_the_reason(cluster, model_archive):
    cluster.start_api()
    worker = cluster.start_worker()
    with cluster.client() as client:
        job_id = submit(client, model_archive)
        for attempt in (1, 2):
            running_engine(client, job_id)
            assert job_state(client, job_id)["attempts"] == attempt
            kill(worker)
            worker = cluster.start_worker()
        job = harness.wait_for_status(client, job_id, harness.FINISHED, timeout=120)
        assert job["status"] == "failed"
        assert job["error"] == "The worker running this job was lost 2 times; giving up."
        assert counts(job_id) == (0, 0)


def test_an_engine_killed_like_the_oom_killer_is_retried_then_given_up(cluster, model_archive):
    cluster.start_api()
    cluster.start_worker()
    with cluster.client() as client:
        job_id = submit(client, model_archive)
        for _attempt in (1, 2):
            killed = running_engine(client, job_id)
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
            # The next attempt may start at once: wait for these engines to be gone, not for none to run.
            wait_until(lambda: not any(alive(pid) for pid in killed), timeout=10)
        job = harness.wait_for_status(client, job_id, harness.FINISHED, timeout=120)
        assert job["status"] == "failed", job
        assert "killed by SIGKILL (the system may have run out of memory)" in job["error"]
        assert "on all 2 attempts" in job["error"]
        lines = log_lines(client, job_id)
        assert any(line.startswith("requeued: The engine was killed by SIGKILL") for line in lines)
        # The worker itself survived both: a new job still runs.
        again = submit(client, model_archive, evaluation={"max_samples": 8, "sequence_length": 32,
                                                          "latency_repeats": 2, "latency_batch_sizes": [1]})
        assert harness.wait_for_status(client, again, harness.FINISHED, timeout=120)["status"] == "succeeded"


@pytest.mark.parametrize(("limits", "expected"), [
    ({"soft_seconds": 3}, "the job ran past its soft time limit of 3 s"),
    ({"soft_seconds": 3, "hard_seconds": 3}, "the job ran past its hard time limit of 3 s and was killed"),
])
def test_a_job_past_its_time_limit_ends_timed_out_and_leaves_nothing(cluster, model_archive, limits, expected):
    from app.config import get_settings

    cluster.start_api()
    cluster.start_worker()
    with cluster.client() as client:
        job_id = submit(client, model_archive, time_limits=limits,
                        evaluation={**STEADY_EVALUATION, "latency_repeats": 10_000})
        job = harness.wait_for_status(client, job_id, harness.FINISHED, timeout=60)
        assert job["status"] == "timed_out", job
        assert job["error"] == f"Timed out: {expected}."
        assert job["started_at"] and job["finished_at"]
        assert [step["state"] for step in job["progress"]["steps"]] == ["not run"]
        assert counts(job_id) == (0, 0)
        assert not (get_settings().storage_dir / "jobs" / job_id).exists()
        assert not engine_pids(job_id)
        assert log_lines(client, job_id)[-1].startswith(f"timed out: {expected}")
