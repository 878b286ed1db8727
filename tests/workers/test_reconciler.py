"""The reconciler, on the real Postgres and Redis: lost workers and unsent messages are recovered."""

from datetime import timedelta

import pytest
import redis
from sqlalchemy import text

from app.config import Settings
from app.db.base import utcnow
from app.db.session import session_scope
from app.job_logs import repository as job_logs
from app.job_logs.orm import JobLogLine
from app.jobs.orm import Job
from tests.conftest import REDIS_URL
from tests.rows import add_checkpoint, add_job_row, add_model_row, checkpoint_rows
from app.jobs.dispatch import dispatch_job
from workers.reconciler import reconcile_once

SETTINGS = Settings(heartbeat_stale_seconds=60, max_attempts=3)


@pytest.fixture
def model_id(database) -> str:
    from app.db.session import get_engine

    with get_engine().begin() as connection:
        connection.execute(text("TRUNCATE artifacts, jobs, models, datasets CASCADE"))
    redis.Redis.from_url(REDIS_URL).flushdb()
    return add_model_row()


def get_job(job_id: str) -> Job:
    with session_scope() as session:
        return session.get(Job, job_id)


def log_of(job_id: str) -> list[JobLogLine]:
    with session_scope() as session:
        return job_logs.lines_after(session, job_id, 0, 100)


def queued_messages() -> int:
    return redis.Redis.from_url(REDIS_URL).llen("cpu")


def test_a_job_whose_worker_went_silent_is_requeued_and_sent(model_id):
    silent = utcnow() - timedelta(minutes=5)
    lost_id = add_job_row(model_id, status="running", attempts=1, heartbeat_at=silent, enqueued_at=silent,
                      created_at=silent)
    stored = add_checkpoint(lost_id)
    alive_id = add_job_row(model_id, status="running", attempts=1, heartbeat_at=utcnow(), enqueued_at=silent)

    outcome = reconcile_once(SETTINGS)

    assert outcome["requeued"] == [lost_id]
    assert outcome["sent"] == [lost_id]
    assert get_job(lost_id).status == "queued"
    assert get_job(lost_id).enqueued_at is not None
    assert get_job(alive_id).status == "running"
    assert queued_messages() == 1
    assert [line.message for line in log_of(lost_id)] == [
        f"requeued: no heartbeat from the worker of attempt 1 since {silent:%H:%M:%S}"
    ]
    assert log_of(alive_id) == []
    assert stored.exists() and checkpoint_rows(lost_id) == 1  # the next attempt resumes from it


def test_a_job_lost_too_often_fails_with_the_reason(model_id):
    silent = utcnow() - timedelta(minutes=5)
    job_id = add_job_row(model_id, status="running", attempts=3, heartbeat_at=silent, enqueued_at=silent)
    stored = add_checkpoint(job_id)
    assert reconcile_once(SETTINGS)["failed"] == [job_id]
    job = get_job(job_id)
    assert job.status == "failed"
    assert "lost 3 times" in job.error
    assert [line.message for line in log_of(job_id)] == [f"failed: {job.error}"]
    assert queued_messages() == 0
    # No attempt will resume from its checkpoints any more.
    assert not stored.exists() and checkpoint_rows(job_id) == 0


def test_a_job_never_sent_to_the_broker_is_sent(model_id):
    old = utcnow() - timedelta(minutes=2)
    unsent_id = add_job_row(model_id, created_at=old)
    fresh_id = add_job_row(model_id)  # the API may still be sending this one
    sent_id = add_job_row(model_id, created_at=old)
    assert dispatch_job(sent_id, "cpu")  # really in the broker
    assert reconcile_once(SETTINGS)["sent"] == [unsent_id]
    assert get_job(unsent_id).enqueued_at is not None
    assert get_job(fresh_id).enqueued_at is None
    assert get_job(sent_id).status == "queued"
    assert queued_messages() == 2
    assert reconcile_once(SETTINGS)["sent"] == []  # nothing is sent twice while the broker holds them


def test_queued_jobs_whose_messages_the_broker_lost_are_resent(model_id):
    old = utcnow() - timedelta(minutes=2)
    lost_ids = {add_job_row(model_id, created_at=old, enqueued_at=old) for _ in range(2)}
    assert queued_messages() == 0  # marked as sent, but the broker holds nothing (e.g. Redis restarted)
    assert set(reconcile_once(SETTINGS)["sent"]) == lost_ids
    assert queued_messages() == 2


def add_suggestion_row(model_id: str, **values) -> str:
    from app.datasets.orm import Dataset, LabelSuggestion
    from app.tenants.orm import DEFAULT_TENANT_ID

    with session_scope() as session:
        dataset = Dataset(
            name="d", filename="d.jsonl", num_rows=1, columns=["text"], size_bytes=1, sha256="0" * 64,
            storage_key="datasets/none", version=1, lineage_id="0" * 32, tenant_id=DEFAULT_TENANT_ID,
        )
        session.add(dataset)
        session.flush()
        suggestion = LabelSuggestion(
            dataset_id=dataset.id, model_id=model_id, n=5, tenant_id=DEFAULT_TENANT_ID,
            **{"status": "queued", **values},
        )
        session.add(suggestion)
        session.flush()
        return suggestion.id


def add_worker_node(name: str, last_seen_at) -> None:
    from app.worker_nodes.orm import WorkerNode

    with session_scope() as session:
        session.merge(WorkerNode(name=name, queues="cpu", last_seen_at=last_seen_at, started_at=last_seen_at))


def get_suggestion(suggestion_id: str):
    from app.datasets.orm import LabelSuggestion

    with session_scope() as session:
        suggestion = session.get(LabelSuggestion, suggestion_id)
        session.expunge(suggestion)
        return suggestion


def test_a_suggestion_whose_worker_went_silent_is_requeued_then_failed(model_id):
    now, old = utcnow(), utcnow() - timedelta(minutes=5)
    add_worker_node("celery@silent", old)
    add_worker_node("celery@alive", now)
    lost_id = add_suggestion_row(model_id, status="running", started_at=old, worker="celery@silent", attempts=1)
    busy_id = add_suggestion_row(model_id, status="running", started_at=old, worker="celery@alive", attempts=1)
    gone_id = add_suggestion_row(model_id, status="running", started_at=old, worker="celery@nowhere", attempts=3)

    assert reconcile_once(SETTINGS)["suggestions_sent"] == [lost_id]
    lost, busy, gone = get_suggestion(lost_id), get_suggestion(busy_id), get_suggestion(gone_id)
    assert (lost.status, lost.worker, lost.started_at) == ("queued", None, None)
    assert queued_messages() == 1  # sent again, for the next worker to claim
    assert busy.status == "running"  # its worker is alive: a long suggestion, not a lost one
    assert gone.status == "failed" and "lost 3 times" in gone.error


def test_queued_suggestions_whose_messages_the_broker_lost_are_resent(model_id):
    old = utcnow() - timedelta(minutes=2)
    suggestion_id = add_suggestion_row(model_id, created_at=old)
    job_id = add_job_row(model_id, created_at=old)
    assert dispatch_job(job_id, "cpu")  # the job's message is there (sent just now); the suggestion's is not
    # The queue holds one message for two queued items: the suggestion's was lost; the job is too fresh to resend.
    result = reconcile_once(SETTINGS)
    assert result["suggestions_sent"] == [suggestion_id] and result["sent"] == []
    assert queued_messages() == 2
    assert reconcile_once(SETTINGS)["suggestions_sent"] == []
