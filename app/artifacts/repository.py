"""Every query on the artifacts table."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.artifacts.orm import Artifact
from app.jobs.orm import Job


def get(session: Session, artifact_id: str) -> Artifact | None:
    return session.get(Artifact, artifact_id)


def get_owned(session: Session, tenant_id: str, artifact_id: str) -> Artifact | None:
    """An artifact belongs to the tenant of its job."""
    query = select(Artifact).join(Job, Job.id == Artifact.job_id).where(
        Artifact.id == artifact_id, Job.tenant_id == tenant_id
    )
    return session.scalar(query)


def for_job(session: Session, job_id: str, kind: str) -> Artifact | None:
    return session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == kind))


def add(session: Session, artifact: Artifact) -> Artifact:
    session.add(artifact)
    session.flush()
    return artifact
