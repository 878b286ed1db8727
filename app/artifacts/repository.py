"""Every query on the artifacts table."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.artifacts.orm import Artifact


def get(session: Session, artifact_id: str) -> Artifact | None:
    return session.get(Artifact, artifact_id)


def for_job(session: Session, job_id: str, kind: str) -> Artifact | None:
    return session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == kind))


def add(session: Session, artifact: Artifact) -> Artifact:
    session.add(artifact)
    session.flush()
    return artifact
