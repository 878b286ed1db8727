"""The startup sweep: removes what a process killed mid-write left in artifact storage.

- Upload scratch folders nobody has written to for a while (the API died mid-upload).
- Model and dataset files with no row (the API died between moving the file into place and
  committing the row; the row is what makes a file exist for users).
- Attempt folders of jobs that are no longer running that attempt (a worker died mid-job).
- Per-step checkpoints of jobs that will not run again (the worker that ended the job died before it
  removed them, or the job was failed by the reconciler).
Only things idle for `idle_seconds` are touched, so another API or worker that is writing right
now, on shared storage, keeps its files.
"""

import logging
import time
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.checkpoints.service import forget_checkpoints
from app.core.storage import Storage, last_write
from app.datasets.orm import Dataset
from app.jobs.orm import QUEUED, RUNNING, Job
from app.models.orm import Model

logger = logging.getLogger(__name__)


@dataclass
class SweepResult:
    scratch: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.scratch) + len(self.keys)


def sweep_orphans(session: Session, storage: Storage, idle_seconds: float) -> SweepResult:
    result = SweepResult(scratch=storage.sweep_scratch(idle_seconds))
    cutoff = time.time() - idle_seconds
    known = set(session.scalars(select(Model.storage_key))) | set(session.scalars(select(Dataset.storage_key)))
    for prefix in ("models", "datasets"):
        for key, written in storage.children(prefix):
            if key not in known and written <= cutoff:
                storage.delete(key)
                result.keys.append(key)
    running = {job_id: attempts for job_id, attempts in session.execute(
        select(Job.id, Job.attempts).where(Job.status == RUNNING))}
    # Attempt folders are working folders (Storage.local_path): on a shared directory they sit beside the
    # artifacts; with a bucket they are on this host's disk only, so listing the bucket would find none.
    jobs_folder = storage.local_path("jobs")
    for attempt in sorted(jobs_folder.glob("*/attempt-*")) if jobs_folder.is_dir() else []:
        job_id, name = attempt.parent.name, attempt.name
        live = f"attempt-{running[job_id]}" if job_id in running else None
        try:
            idle = last_write(attempt) <= cutoff
        except FileNotFoundError:
            continue  # removed while listing
        if name != live and idle:
            key = f"jobs/{job_id}/{name}"
            storage.delete(key)
            result.keys.append(key)
    waiting = set(session.scalars(select(Job.id).where(Job.status.in_((QUEUED, RUNNING)))))
    for key, written in storage.children("checkpoints"):
        job_id = key.rsplit("/", 1)[1]
        if job_id not in waiting and written <= cutoff:
            forget_checkpoints(job_id, storage)
            result.keys.append(key)
    if result.count:
        logger.warning("startup sweep removed %d orphans: %s", result.count, result.scratch + result.keys)
    return result
