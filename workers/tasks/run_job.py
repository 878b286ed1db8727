"""The Celery task that runs one compression job: a thin adapter between the database and the engine.

It is idempotent: a finished job is left alone, and artifacts are keyed by (job, kind), so a
redelivered message can neither run a finished job again nor store a second artifact.
"""

import functools
import json
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from celery import signals
from celery.exceptions import Reject
from sqlalchemy.exc import OperationalError

from app.artifacts import repository as artifacts_repository
from app.artifacts.orm import Artifact
from app.checkpoints.service import forget_checkpoints
from app.config import Settings, get_settings
from app.core.storage import Storage, sha256_of, storage_for
from app.datasets import repository as datasets_repository
from app.db.base import utcnow
from app.db.session import run_after_rollback, session_scope
from app.energy import repository as energy_repository
from app.energy.orm import EnergyRecord
from app.job_logs import repository as job_logs_repository
from app.job_logs.orm import WORKER
from app.jobs import repository as jobs_repository
from app.jobs.dispatch import dispatch_job
from app.jobs.orm import CANCELLED, FAILED, FINISHED_STATUSES, QUEUED, RUNNING, SUCCEEDED, TIMED_OUT, Job
from app.jobs.report_figures import report_figures
from app.models import repository as models_repository
from app.reports import service as reports_service
from app.webhooks.destinations import destination_problem
from app.webhooks.events import record_job_event
from workers.celery_app import FEDERATED_SITE_TASK, RUN_JOB_TASK, celery_app
from workers.engine.federated.config import site_queue
from workers.engine.recipe import Recipe, RecipeError
from workers.engine.stages import STEP_STAGE
from workers.tasks.checkpoint_store import CheckpointUploader, find_resume_point
from workers.tasks.engine_process import EngineOutcome, run_engine
from workers.tasks.job_spec import engine_spec, job_checkpoint_key
from workers.tasks.log_shipper import LogShipper
from workers.tasks.mlflow_run import log_job_run
from workers.tasks.time_limits import Deadlines

logger = logging.getLogger(__name__)
T = TypeVar("T")

PROGRESS_WRITE_SECONDS = 0.5
ENERGY_FIELDS = ("duration_s", "cpu_kwh", "gpu_kwh", "ram_kwh", "energy_kwh", "co2e_g")
STOP_CANCELLED = "cancelled"
STOP_SHUTDOWN = "worker shutting down"
STOP_NOT_OURS = "the job is no longer running here"

# Set when the worker begins a warm shutdown (Ctrl-C, SIGTERM): running jobs go back to the queue.
worker_stopping = threading.Event()


@signals.worker_shutting_down.connect
def _on_worker_shutting_down(**_kwargs) -> None:
    worker_stopping.set()


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}"


def _parsed_recipe(recipe: dict | None) -> Recipe | None:
    """The job's recipe, or None (a goal job's, or one with problems: the engine reports those as the job's error)."""
    try:
        return Recipe.from_dict(recipe) if recipe else None
    except RecipeError:
        return None


def _site_datasets(session, recipe: Recipe | None) -> dict[str, dict]:  # noqa: ANN001
    """What the sites' workers need to find the datasets a federated step names: their hashes and file names."""
    found = {}
    for _index, entry in recipe.referenced_site_datasets() if recipe else []:
        dataset = datasets_repository.get(session, entry.dataset_id)
        if dataset is not None and dataset.site == entry.site:  # deleted since submit: the site never connects
            found[dataset.id] = {"id": dataset.id, "sha256": dataset.sha256, "filename": dataset.filename}
    return found


def _claim(job_id: str) -> dict | None:
    """Marks the job running and returns what the engine needs, or None when there is nothing to run."""
    with session_scope() as session:
        job = jobs_repository.get(session, job_id)
        if job is None or job.status in FINISHED_STATUSES:
            return None
        if job.status != QUEUED:
            return None  # a duplicate message: another worker holds the job (the reconciler watches it)
        if job.cancel_requested:
            jobs_repository.transition(session, job_id, (QUEUED,), status=CANCELLED, finished_at=utcnow())
            return None
        model = models_repository.get(session, job.model_id) if job.model_id else None
        recipe = _parsed_recipe(job.recipe)
        # Other models the recipe names (e.g. a distillation student); one deleted since submit is
        # left out, and the step that needs it fails with a clear message.
        referenced = {
            model_id: found.storage_key
            for model_id in (recipe.referenced_models() if recipe else [])
            if (found := models_repository.get_owned(session, job.tenant_id, model_id)) is not None
        }
        dataset = datasets_repository.get(session, job.dataset_id) if job.dataset_id else None
        now = utcnow()
        # Read before the transition, which expires `job` and would reload the incremented count.
        attempt = job.attempts + 1
        claimed = jobs_repository.transition(
            session,
            job_id,
            (QUEUED,),
            status=RUNNING,
            attempts=attempt,
            started_at=now,
            heartbeat_at=now,
            stage="starting",
            progress=0.0,
            error=None,
        )
        if not claimed:
            return None
        record_job_event(session, job_id, "running")
        return {
            "attempt": attempt,
            "recipe": job.recipe,
            "goal": job.goal,
            "evaluation": job.evaluation,
            "deployment": job.deployment,
            "dataset_sha256": dataset.sha256 if dataset else None,
            "device": job.device,
            "target": job.target,
            "model_key": model.storage_key if model else None,
            "site_datasets": _site_datasets(session, recipe),
            "referenced_model_keys": referenced,
            "dataset_key": dataset.storage_key if dataset else None,
            "job": {"id": job.id, "name": job.name, "device": job.device, "model_id": job.model_id,
                    "recipe": job.recipe},
            "mlflow": job.mlflow,
            "time_limits": job.time_limits,
            "queue": job.queue,
        }


def _by_stage(section: dict | None) -> dict[str, dict]:
    return {stage["stage"]: stage for stage in (section or {}).get("stages", [])}


def _energy_records(job_id: str, report: dict) -> list[EnergyRecord]:
    water, embodied = _by_stage(report.get("water")), _by_stage(report.get("embodied"))
    records = []
    for stage in report.get("energy", {}).get("stages", []):
        step = STEP_STAGE.match(stage["stage"])  # a site's stage (step_2.federated.site_x) belongs to its step
        stage_water, stage_embodied = water.get(stage["stage"], {}), embodied.get(stage["stage"], {})
        records.append(
            EnergyRecord(
                job_id=job_id,
                stage=stage["stage"],
                step_index=int(step["index"]) if step else None,
                technique=step["technique"] if step else None,
                **{field: stage[field] for field in ENERGY_FIELDS},
                method=stage["method"],
                water_onsite_l=stage_water.get("onsite_l"),
                water_offsite_l=stage_water.get("offsite_l"),
                embodied_gco2e=stage_embodied.get("gwp_g"),
            )
        )
    return records


EVENT_BY_STATUS = {QUEUED: "requeued", FAILED: "failed", CANCELLED: "cancelled", TIMED_OUT: "timed_out"}



def retry_while_database_down(write: Callable[..., T]) -> Callable[..., T]:
    """A job's final status write must not be lost to a database outage (the engine's work would be
    thrown away with it): retry it, backing off, for up to COMPRESSO_DATABASE_RETRY_SECONDS."""

    @functools.wraps(write)
    def retrying(*args, **kwargs) -> T:
        deadline = time.monotonic() + get_settings().database_retry_seconds
        delay = 1.0
        while True:
            try:
                return write(*args, **kwargs)
            except OperationalError:
                if time.monotonic() + delay > deadline:
                    raise
                logger.warning("the database is unreachable; retrying %s in %.0f s", write.__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    return retrying


@retry_while_database_down
def _end(job_id: str, attempt: int, status: str, log_line: str, **values) -> None:
    """Moves a running job to `status`, logs why and records the webhook event, in one transaction:
    whoever sees the new status also sees the line and gets the event."""
    with session_scope() as session:
        if jobs_repository.transition(session, job_id, (RUNNING,), status=status, **values):
            job_logs_repository.append(session, job_id, attempt, [(WORKER, log_line)])
            record_job_event(session, job_id, EVENT_BY_STATUS[status])


def _log_to_mlflow(claim: dict, settings: Settings, outcome: EngineOutcome, log: LogShipper) -> dict | None:
    """The job's MLflow state to store: its options plus the logged run, or the error. Never raises."""
    options = claim["mlflow"] or {}
    tracking_uri = options.get("tracking_uri") or settings.mlflow_tracking_uri
    if tracking_uri is None:
        return claim["mlflow"]
    try:
        if options.get("tracking_uri"):
            # A job's own server is checked like a webhook, after DNS resolution.
            problem = destination_problem(tracking_uri, settings.webhooks_allow_private)
            if problem is not None:
                raise ValueError(problem)
        report = json.loads(outcome.report_path.read_text())
        run = log_job_run(
            tracking_uri,
            options.get("experiment_name") or settings.mlflow_experiment,
            options.get("registered_model_name"),
            # The recipe that ran: a goal job's is the one its search chose.
            {**claim["job"], "recipe": report["job"]["recipe"]},
            report,
            outcome.model_zip,
            outcome.report_path,
        )
    except Exception as exc:  # noqa: BLE001 - MLflow is a copy of the results; the job itself succeeded
        logger.warning("logging job %s to MLflow failed", claim["job"]["id"], exc_info=True)
        log.worker(f"mlflow: the run could not be logged: {type(exc).__name__}: {exc}"[:1000])
        return {**options, "error": f"{type(exc).__name__}: {exc}"[:1000]}
    version = f", model {run['registered_model_name']} version {run['model_version']}" if run["model_version"] else ""
    log.worker(f"mlflow: logged run {run['run_id']} in experiment {run['experiment_id']}{version}")
    return {**options, "run": run}


@retry_while_database_down
def _store_results(
    job_id: str, attempt: int, storage: Storage, outcome: EngineOutcome, mlflow_state: dict | None
) -> None:
    report = json.loads(outcome.report_path.read_text())
    with session_scope() as session:
        for kind, source in (("model", outcome.model_zip), ("report", outcome.report_path)):
            if artifacts_repository.for_job(session, job_id, kind) is not None:
                continue
            key = f"{job_prefix(job_id)}/{source.name}"
            size, digest = source.stat().st_size, sha256_of(source)
            storage.put(source, key)
            run_after_rollback(session, lambda key=key: storage.delete(key))
            artifacts_repository.add(
                session,
                Artifact(job_id=job_id, kind=kind, filename=source.name, size_bytes=size, sha256=digest, storage_key=key),
            )
        if not energy_repository.for_job(session, job_id):
            energy_repository.add_all(session, _energy_records(job_id, report))
        finished = jobs_repository.transition(
            session,
            job_id,
            (RUNNING,),
            status=SUCCEEDED,
            report=report,
            # A goal job's recipe is the one its search chose.
            recipe=report["job"]["recipe"],
            **report_figures(report),
            mlflow=mlflow_state,
            progress=1.0,
            stage="done",
            finished_at=utcnow(),
        )
        if not finished:
            raise RuntimeError(f"job {job_id} left the running state before its results were stored")
        reports_service.record_success(session, jobs_repository.get(session, job_id).tenant_id, report)
        job_logs_repository.append(session, job_id, attempt, [(WORKER, "succeeded: the model and report are stored")])
        record_job_event(session, job_id, "succeeded")


class ProgressWriter:
    """Writes progress to the database, at most every PROGRESS_WRITE_SECONDS unless the stage changes."""

    def __init__(self, job_id: str):
        self.job_id = job_id
        self.last_stage: str | None = None
        self.last_write = 0.0

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.monotonic()
        if stage == self.last_stage and now - self.last_write < PROGRESS_WRITE_SECONDS:
            return
        self.last_stage, self.last_write = stage, now
        try:
            with session_scope() as session:
                jobs_repository.set_progress(session, self.job_id, stage, min(max(fraction, 0.0), 1.0))
        except Exception:  # noqa: BLE001 - progress is informative; losing one update must not stop the job
            logger.warning("progress update for job %s failed", self.job_id, exc_info=True)


def _stop_reason(job_id: str) -> str | None:
    """Called every poll: sends the heartbeat and says whether the job must stop."""
    if worker_stopping.is_set():
        return STOP_SHUTDOWN
    try:
        with session_scope() as session:
            cancelled = jobs_repository.heartbeat(session, job_id, utcnow())
    except Exception:  # noqa: BLE001 - a database blip must not kill a job hours in; the next poll retries
        logger.warning("heartbeat for job %s failed", job_id, exc_info=True)
        return None
    if cancelled is None:
        return STOP_NOT_OURS
    return STOP_CANCELLED if cancelled else None


def _on_engine_event(job_id: str, claim: dict, event: dict, log: LogShipper, uploader: CheckpointUploader) -> None:
    """A step's checkpoint is written: store it. A federated step is listening: each site's worker gets its
    share of the training (queue site.NAME)."""
    if event.get("event") == "checkpoint":
        uploader.submit(int(event["step"]), Path(event["path"]), bool(event.get("supersedes_earlier")),
                        event.get("within_step"))
    if event.get("event") != "federation":
        return
    sent = []
    for entry in event["sites"]:
        dataset = claim["site_datasets"].get(entry["dataset_id"])
        if dataset is None:
            log.worker(f"federated: dataset {entry['dataset_id']} of site {entry['site']} is gone; the site is left out")
            continue
        request = {
            "job_id": job_id, "site": entry["site"], "address": event["address"], "token": event["token"],
            "tls": event.get("tls", False),
            "task": event["task"], "dataset": dataset, "model_key": claim["model_key"],
            "connect_timeout_s": event["connect_timeout_s"], "run_timeout_s": event["run_timeout_s"],
        }
        try:
            # Unclaimed past the connect timeout, the request is stale: the step has gone on without the site.
            celery_app.send_task(FEDERATED_SITE_TASK, args=[request], queue=site_queue(entry["site"]),
                                 expires=event["connect_timeout_s"])
            sent.append(entry["site"])
        except Exception as exc:  # noqa: BLE001 - the coordinator names the sites that never connect
            log.worker(f"federated: could not send the training to site {entry['site']}: {exc}")
    log.worker(f"federated: sent the training to sites {', '.join(sent) or 'none'} ({event['address']})")


def execute_job(job_id: str) -> str:
    """Runs one job to an end state and returns that state (or "skipped")."""
    settings = get_settings()
    storage = storage_for(settings)
    claim = _claim(job_id)
    if claim is None:
        return "skipped"
    if claim["model_key"] is None or not storage.exists(claim["model_key"]):
        error = "The job's model was deleted before the job ran."
        _end(job_id, claim["attempt"], FAILED, f"failed: {error}", error=error, finished_at=utcnow())
        return FAILED

    # One folder per attempt: a worker that lost the job must not trample on the next attempt's files.
    work_dir = storage.local_path(f"{job_prefix(job_id)}/attempt-{claim['attempt']}")
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    log = LogShipper(job_id, claim["attempt"], work_dir / "engine.log")
    log.worker(
        f"attempt {claim['attempt']} started on {socket.gethostname()} (worker pid {os.getpid()}), device {claim['device']}"
    )
    key = job_checkpoint_key(claim)
    resume = find_resume_point(job_id, key, storage, work_dir, log)
    spec_path = work_dir / "spec.json"
    spec_path.write_text(json.dumps(engine_spec(claim, settings, storage, work_dir, key, resume)))
    uploader = CheckpointUploader(job_id, key, claim["attempt"], storage, log)
    try:
        outcome = run_engine(
            spec_path,
            log.engine_log,
            on_progress=ProgressWriter(job_id),
            should_stop=lambda: _stop_reason(job_id),
            poll_seconds=settings.cancel_poll_seconds,
            on_poll=log.ship,
            deadlines=Deadlines.for_job(settings.time_limits, claim["time_limits"], claim["recipe"]),
            nice=settings.engine_nice,
            on_event=lambda event: _on_engine_event(job_id, claim, event, log, uploader),
        )
        # The next attempt of a stopped job resumes from them; a finished job needs none.
        uploader.close(store_pending=outcome.kind != "done")
        log.ship(final=True)
        if outcome.kind == "done":
            mlflow_state = _log_to_mlflow(claim, settings, outcome, log)
            _store_results(job_id, claim["attempt"], storage, outcome, mlflow_state)
            forget_checkpoints(job_id, storage)
            return SUCCEEDED
    finally:
        uploader.close(store_pending=False)  # after an exception; a no-op once closed
        shutil.rmtree(work_dir, ignore_errors=True)

    if outcome.kind == "stopped" and outcome.message == STOP_NOT_OURS:
        log.worker("stopped: the job is no longer running on this worker")
        return "skipped"
    if outcome.kind == "stopped" and outcome.message == STOP_SHUTDOWN:
        # A clean shutdown is not the job's fault: the attempt is given back.
        _end(
            job_id, claim["attempt"], QUEUED, "requeued: the worker is shutting down; this attempt is not counted",
            attempts=Job.attempts - 1, stage="requeued: worker stopped",
        )
        raise Reject(STOP_SHUTDOWN, requeue=True)
    storage.delete(job_prefix(job_id))
    state = _end_attempt(job_id, claim, outcome, settings.max_attempts)
    if state != QUEUED:
        forget_checkpoints(job_id, storage)
    return state


def _end_attempt(job_id: str, claim: dict, outcome: EngineOutcome, max_attempts: int) -> str:
    """Records how an attempt that did not succeed ended, and returns the job's new state."""
    # The stage is left where the job stopped, so its page can say which step it reached.
    if outcome.kind == "timed_out":
        _end(job_id, claim["attempt"], TIMED_OUT, f"timed out: {outcome.message}; its files were removed",
             error=f"Timed out: {outcome.message}.", finished_at=utcnow())
        return TIMED_OUT
    if outcome.kind == "crashed" and outcome.retryable and claim["attempt"] < max_attempts:
        # Not the job's fault as far as anyone can tell (a kill, memory): another attempt may succeed.
        _end(job_id, claim["attempt"], QUEUED,
             f"requeued: {outcome.message} (attempt {claim['attempt']} of {max_attempts})",
             stage=f"requeued: {outcome.message}"[:100], enqueued_at=None)
        dispatch_job(job_id, claim["queue"])  # were the broker down, the reconciler sends it later
        return QUEUED
    if outcome.kind == "crashed" and outcome.retryable:
        reason = f"{outcome.message} It happened on all {claim['attempt']} attempts; giving up."
        _end(job_id, claim["attempt"], FAILED, f"failed: {reason}", error=reason, finished_at=utcnow())
        return FAILED
    if outcome.kind == "stopped":
        _end(job_id, claim["attempt"], CANCELLED, "cancelled on request: the engine was stopped and its files removed",
             finished_at=utcnow())
        return CANCELLED
    _end(job_id, claim["attempt"], FAILED, f"failed: {outcome.message}", error=outcome.message, finished_at=utcnow())
    return FAILED


@celery_app.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> str:
    return execute_job(job_id)

