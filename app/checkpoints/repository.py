"""Every query on the job_checkpoints table."""

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.checkpoints.orm import JobCheckpoint


def newest_first(session: Session, job_id: str, key: str) -> list[JobCheckpoint]:
    """The job's checkpoints for this key, the one after the latest step first."""
    query = select(JobCheckpoint).where(JobCheckpoint.job_id == job_id, JobCheckpoint.key == key)
    return list(session.scalars(query.order_by(JobCheckpoint.step.desc())))


def replace(session: Session, checkpoint: JobCheckpoint) -> list[str]:
    """Stores the row, replacing the one of the same job, key and step (an earlier attempt's, or one taken
    inside that step); returns the storage keys the replaced rows named."""
    same_step = (JobCheckpoint.job_id == checkpoint.job_id, JobCheckpoint.key == checkpoint.key,
                 JobCheckpoint.step == checkpoint.step)
    replaced = list(session.scalars(select(JobCheckpoint.storage_key).where(*same_step)))
    session.execute(delete(JobCheckpoint).where(*same_step))
    session.add(checkpoint)
    session.flush()
    return replaced


def remove(session: Session, checkpoint_id: str) -> None:
    session.execute(delete(JobCheckpoint).where(JobCheckpoint.id == checkpoint_id))


def remove_for_job(session: Session, job_id: str) -> None:
    session.execute(delete(JobCheckpoint).where(JobCheckpoint.job_id == job_id))
