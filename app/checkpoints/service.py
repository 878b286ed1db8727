"""Removing a job's checkpoints once it has ended, wherever it ends: the worker that ran it, the reconciler
that gave up on it, or the API that cancelled it while it waited for another attempt."""

import logging

from app.checkpoints import repository
from app.core.storage import Storage
from app.db.session import session_scope

logger = logging.getLogger(__name__)


def checkpoints_prefix(job_id: str) -> str:
    return f"checkpoints/{job_id}"


def forget_checkpoints(job_id: str, storage: Storage) -> None:
    """Deletes the job's stored checkpoints and their rows. Never raises: were this to fail, the startup sweep
    removes them later (app.maintenance.sweep)."""
    try:
        storage.delete(checkpoints_prefix(job_id))
        with session_scope() as session:
            repository.remove_for_job(session, job_id)
    except Exception:  # noqa: BLE001 - the job's own end is already recorded
        logger.warning("removing the checkpoints of job %s failed", job_id, exc_info=True)
