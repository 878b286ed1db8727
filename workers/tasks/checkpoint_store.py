"""Stores the engine's per-step checkpoints and finds the one another attempt resumes from.

A checkpoint folder travels as one uncompressed tar (one object, one sha256) under
checkpoints/<job>/<key>/step-<n>.tar. Its row in job_checkpoints is written once the object is in place;
an attempt uses a checkpoint only when the bytes it reads back have the sha256 of that row, because the
engine unpickles the model it holds (workers.engine.checkpoints.store). A checkpoint that fails the check
is deleted and the next older one is tried.

Uploads run on a thread of their own: storing a large model takes a while, and the supervision loop must
go on sending heartbeats and checking for cancellation meanwhile.
"""

import hashlib
import json
import logging
import queue
import shutil
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

from app.checkpoints import repository as checkpoints_repository
from app.checkpoints.orm import JobCheckpoint
from app.checkpoints.service import checkpoints_prefix
from app.core.storage import Storage, sha256_of
from app.db.session import session_scope
from workers.engine.checkpoints.settings import MANIFEST_FILE, progress_text
from workers.tasks.log_shipper import LogShipper

logger = logging.getLogger(__name__)


def _pack(folder: Path) -> Path:
    archive = folder.with_suffix(".tar")
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname=".")
    return archive


class CheckpointUploader:
    """Stores each checkpoint the engine announces, in order, on one background thread."""

    def __init__(self, job_id: str, key: str, attempt: int, storage: Storage, log: LogShipper):
        self.job_id, self.key, self.attempt, self.storage, self.log = job_id, key, attempt, storage, log
        self._folders: queue.Queue[tuple[int, Path, bool, dict | None, int] | None] = queue.Queue()
        self._store_pending = True
        self._lock = threading.Lock()
        self._submitted = 0
        self._latest: dict[int, int] = {}  # step -> the number of its latest checkpoint submitted
        self._thread = threading.Thread(target=self._run, name=f"checkpoints-{job_id}", daemon=True)
        self._thread.start()

    def submit(self, step: int, folder: Path, supersedes_earlier: bool = False, within_step: dict | None = None) -> None:
        """`supersedes_earlier`: once this one is stored, the job's other checkpoints are deleted (a goal's
        search needs only its latest). `within_step`: taken inside step `step` (how far it got); one that a
        later checkpoint of the same step overtakes in the queue is not stored."""
        with self._lock:
            self._submitted += 1
            self._latest[step] = self._submitted
            number = self._submitted
        self._folders.put((step, folder, supersedes_earlier, within_step, number))

    def close(self, store_pending: bool) -> None:
        """Waits for the upload under way, then stores what is still queued (or drops it), and stops."""
        if not self._thread.is_alive():
            return
        self._store_pending = store_pending
        self._folders.put(None)
        self._thread.join()

    def _overtaken(self, step: int, number: int, within_step: dict | None) -> bool:
        with self._lock:
            return within_step is not None and self._latest.get(step, number) > number

    def _run(self) -> None:
        while (item := self._folders.get()) is not None:
            step, folder, supersedes_earlier, within_step, number = item
            try:
                if self._store_pending and not self._overtaken(step, number, within_step):
                    self._store(step, folder, within_step)
                    if supersedes_earlier:
                        self._delete_others(step)
            except Exception as exc:  # noqa: BLE001 - a checkpoint is a saving, never a reason to fail the job
                logger.warning("storing the checkpoint of job %s step %d failed", self.job_id, step, exc_info=True)
                self.log.worker(f"checkpoint {_where(step, within_step)} not stored: {type(exc).__name__}: {exc}"[:1000])
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    def _store(self, step: int, folder: Path, within_step: dict | None) -> None:
        archive = _pack(folder)
        shutil.rmtree(folder, ignore_errors=True)
        size, digest = archive.stat().st_size, sha256_of(archive)
        # A checkpoint inside a step has a name of its own, so that the one it replaces stays whole until the
        # row names the new one.
        name = f"step-{step:02d}.tar" if within_step is None else f"step-{step:02d}-within-{digest[:16]}.tar"
        storage_key = f"{checkpoints_prefix(self.job_id)}/{self.key}/{name}"
        self.storage.put(archive, storage_key)  # a move: the archive is gone from here
        with session_scope() as session:
            replaced = checkpoints_repository.replace(session, JobCheckpoint(
                job_id=self.job_id, key=self.key, step=step, attempt=self.attempt, storage_key=storage_key,
                size_bytes=size, sha256=digest,
            ))
        for old_key in set(replaced) - {storage_key}:
            self.storage.delete(old_key)
        self.log.worker(f"checkpoint {_where(step, within_step)} stored ({size / 1e6:.1f} MB, sha256 {digest[:12]})")

    def _delete_others(self, step: int) -> None:
        """Every other checkpoint of the job and key: earlier ones, and a later one of an earlier attempt that
        this attempt could not resume from (it searched again from the start)."""
        with session_scope() as session:
            rows = checkpoints_repository.newest_first(session, self.job_id, self.key)
            others = [(row.id, row.storage_key) for row in rows if row.step != step]
        for checkpoint_id, storage_key in others:
            _discard(self.storage, checkpoint_id, storage_key)


def _where(step: int, within_step: dict | None) -> str:
    return f"after step {step}" if within_step is None else f"inside step {step} ({progress_text(within_step)})"


@dataclass(frozen=True)
class ResumePoint:
    folder: Path  # the checkpoint, extracted
    step: int
    attempt: int


def _download_checked(storage: Storage, checkpoint: JobCheckpoint, archive: Path) -> str:
    """Streams the object to `archive`; returns the sha256 of what was read."""
    digest = hashlib.sha256()
    with archive.open("wb") as handle:
        for chunk in storage.open_chunks(checkpoint.storage_key):
            digest.update(chunk)
            handle.write(chunk)
    return digest.hexdigest()


def _discard(storage: Storage, checkpoint_id: str, storage_key: str) -> None:
    storage.delete(storage_key)
    with session_scope() as session:
        checkpoints_repository.remove(session, checkpoint_id)


def _in_step(folder: Path) -> dict | None:
    """What the checkpoint's manifest says of a step it was taken inside, if any (for the log only: the engine
    checks the manifest)."""
    try:
        return json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8")).get("in_step")
    except (OSError, ValueError, AttributeError):
        return None


def find_resume_point(job_id: str, key: str, storage: Storage, work_dir: Path, log: LogShipper) -> ResumePoint | None:
    """The latest stored checkpoint of this job and key whose bytes match their recorded sha256, extracted
    under `work_dir`; None when there is none, or when looking failed (every step then runs)."""
    try:
        return _find_resume_point(job_id, key, storage, work_dir, log)
    except Exception as exc:  # noqa: BLE001 - a checkpoint only saves work: without one, every step runs
        logger.warning("looking for a checkpoint of job %s failed", job_id, exc_info=True)
        log.worker(f"no checkpoint used: looking for one failed: {type(exc).__name__}: {exc}"[:1000])
        return None


def _find_resume_point(job_id: str, key: str, storage: Storage, work_dir: Path, log: LogShipper) -> ResumePoint | None:
    with session_scope() as session:
        rows = checkpoints_repository.newest_first(session, job_id, key)
        session.expunge_all()
    for checkpoint in rows:
        archive = work_dir / f"resume-step-{checkpoint.step:02d}.tar"
        digest = _download_checked(storage, checkpoint, archive) if storage.exists(checkpoint.storage_key) else None
        if digest != checkpoint.sha256:
            what = "is missing" if digest is None else f"has sha256 {digest[:12]}, not the {checkpoint.sha256[:12]} stored"
            log.worker(f"checkpoint after step {checkpoint.step} {what}; it is deleted and not used")
            archive.unlink(missing_ok=True)
            _discard(storage, checkpoint.id, checkpoint.storage_key)
            continue
        folder = work_dir / f"resume-step-{checkpoint.step:02d}"
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
        archive.unlink()
        in_step = _in_step(folder)
        where = _where(checkpoint.step, None if in_step is None else in_step.get("progress", {}))
        log.worker(f"resuming {where} from the checkpoint attempt {checkpoint.attempt} saved")
        return ResumePoint(folder=folder, step=checkpoint.step, attempt=checkpoint.attempt)
    return None
