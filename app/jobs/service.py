"""Rules for compression jobs: validation before anything is queued, routing by device, and cancellation."""

from datetime import timedelta

from sqlalchemy.orm import Session

from app.checkpoints.service import forget_checkpoints
from app.config import Settings
from app.core.storage import Storage
from app.db.session import run_after_commit
from app.jobs.dispatch import dispatch_job
from app.jobs.goal import check_goal
from app.core.errors import Conflict, Invalid, NotFound
from app.datasets import repository as datasets_repository
from app.datasets.orm import Dataset
from app.db.base import utcnow
from app.job_logs import repository as job_logs_repository
from app.job_logs.orm import API
from app.jobs import repository
from app.jobs.orm import CANCELLED, QUEUED, RUNNING, Job
from app.jobs.schemas import JobCreate
from app.models import repository as models_repository
from app.tenants import limits
from app.tenants.orm import Tenant
from app.webhooks.destinations import literal_private, url_problem
from app.webhooks.events import record_job_event
from app.worker_nodes import repository as worker_nodes
from workers.engine.energy.intensity import carbon_intensity
from workers.engine.errors import EngineUserError
from workers.engine.presets import get_preset, preset_names, preset_recipe
from workers.engine.recipe import Recipe, RecipeError
from workers.engine.target import Target, changes_task, step_task_problems, target_problems, task_problem

QUEUE_BY_DEVICE = {"cpu": "cpu", "cuda": "gpu"}


def validate_recipe(recipe: dict) -> Recipe:
    try:
        return Recipe.from_dict(recipe)
    except RecipeError as exc:
        errors = [{**error, "loc": ["body", *error["loc"]]} for error in exc.errors]
        raise Invalid(f"Invalid recipe: {exc}", errors=errors) from exc


def resolve_recipe(body: JobCreate) -> Recipe | None:
    """The job's own recipe, or the one its preset names, or None for a goal; exactly one of the three."""
    if sum(value is not None for value in (body.recipe, body.preset, body.goal)) != 1:
        msg = ("give exactly one of recipe (your own steps), preset (a name from GET /v1/recipes/presets) or goal "
               "(constraints and an objective to search for)")
        raise Invalid(f"{msg[0].upper()}{msg[1:]}.", errors=[{"loc": ["body", "recipe"], "msg": msg}])
    if body.goal is not None:
        return None
    if body.preset is None:
        return validate_recipe(body.recipe)
    try:
        return validate_recipe(preset_recipe(body.preset))
    except KeyError:
        msg = f"unknown preset {body.preset!r}"
        raise Invalid(
            f"{msg[0].upper()}{msg[1:]}; GET /v1/recipes/presets lists them.",
            errors=[{"loc": ["body", "preset"], "msg": msg, "allowed": preset_names()}],
        ) from None


def validate_model_references(session: Session, tenant: Tenant, recipe: Recipe) -> None:
    """Models a step names by id (e.g. distill's student_model_id) must be the tenant's own uploads."""
    for index, step in enumerate(recipe.steps):
        for param, model_id in step.referenced_models().items():
            if models_repository.get_owned(session, tenant.id, model_id) is None:
                msg = f"model {model_id} not found: upload it first with POST /v1/models"
                raise Invalid(
                    f"Recipe step {index} ({step.technique}): {msg}.",
                    errors=[{"loc": ["body", "recipe", "steps", index, "params", param], "msg": msg}],
                )


def validate_site_datasets(session: Session, tenant: Tenant, recipe: Recipe) -> None:
    """Each site a federated step lists must hold the dataset named beside it: one of the tenant's,
    registered by that very site (POST /v1/sites/{site}/datasets)."""
    problems = []
    for index, entry in recipe.referenced_site_datasets():
        dataset = datasets_repository.get_owned(session, tenant.id, entry.dataset_id)
        if dataset is None:
            msg = (f"dataset {entry.dataset_id} not found: register it at site {entry.site} with "
                   f"`compresso site add-dataset FILE --site {entry.site}`")
        elif dataset.site is None:
            msg = (f"dataset {dataset.id} was uploaded here, not registered by a site; a federated step trains on "
                   f"datasets held by their sites (`compresso site add-dataset FILE --site {entry.site}`)")
        elif dataset.site != entry.site:
            msg = f"dataset {dataset.id} is held by site {dataset.site}, not by site {entry.site}"
        else:
            continue
        problems.append((index, msg))
    if problems:
        index, msg = problems[0]
        raise Invalid(f"Recipe step {index} (federated): {msg}.", errors=[
            {"loc": ["body", "recipe", "steps", step, "params", "sites"], "msg": problem} for step, problem in problems
        ])


def validate_job_dataset(dataset: Dataset | None) -> None:
    """A job's own dataset is read where the job runs: a site-held one is not there."""
    if dataset is not None and dataset.site is not None:
        msg = (f"dataset {dataset.id} is held by site {dataset.site}; name it in a federated step's sites "
               "instead")
        raise Invalid(f"{msg[0].upper()}{msg[1:]}.", errors=[{"loc": ["body", "dataset_id"], "msg": msg}])


def resolve_device(requested: str, settings: Settings, target: Target | None = None, gpu_alive: bool = False) -> str:
    """"auto" goes to a GPU worker when the result must be measured on a GPU or when a GPU worker is
    alive, else where COMPRESSO_AUTO_DEVICE says."""
    if requested == "auto":
        wants_gpu = (target is not None and target.device == "cuda") or (gpu_alive and settings.gpu_enabled)
        device = "cuda" if wants_gpu else settings.auto_device
    else:
        device = requested
    if device == "cuda" and not settings.gpu_enabled:
        why = " and the target device is cuda" if target is not None and target.device == "cuda" else ""
        raise Invalid(
            f"No GPU worker serves this deployment (COMPRESSO_GPU_ENABLED is false){why}: use \"device\": \"cpu\" "
            "or \"auto\" with a cpu target.",
            errors=[{"loc": ["body", "device"], "msg": "no GPU worker", "allowed": ["auto", "cpu"]}],
        )
    return device


def validate_target(recipe: Recipe, target: Target, device: str) -> None:
    problems = target_problems(recipe.to_dict()["steps"], target, device)
    if problems:
        errors = [{**problem, "loc": ["body", *problem["loc"]]} for problem in problems]
        raise Invalid(f"The recipe cannot build a result for {target.describe()}: {RecipeError(problems)}.", errors=errors)


def validate_labelled_dataset(recipe: Recipe, dataset: Dataset | None) -> None:
    """A finetune step trains on labels: the job's dataset must have a label column."""
    if not changes_task(recipe.steps) or (dataset is not None and "label" in dataset.columns):
        return
    msg = (
        "finetune trains on labels, and this job has no dataset" if dataset is None
        else f"finetune trains on labels, and dataset {dataset.id} has no label column"
    )
    raise Invalid(f"{msg}: give dataset_id of a labelled dataset (label the rows first if needed).",
                  errors=[{"loc": ["body", "dataset_id"], "msg": msg}])


def validate_deployment_country(country: str | None) -> None:
    if country is None:
        return
    try:
        carbon_intensity(country)
    except EngineUserError as exc:
        raise Invalid(str(exc), errors=[{"loc": ["body", "deployment", "country"], "msg": str(exc)}]) from exc


def validate_webhook_url(url: str | None, settings: Settings) -> None:
    if url is None:
        return
    problem = url_problem(url)
    if problem is None and literal_private(url) and not settings.webhooks_allow_private:
        problem = "a private, loopback or link-local address needs COMPRESSO_WEBHOOKS__ALLOW_PRIVATE=true on the server"
    if problem is not None:
        raise Invalid(f"webhook_url: {problem}.", errors=[{"loc": ["body", "webhook_url"], "msg": problem}])


def validate_mlflow(body: JobCreate, settings: Settings) -> None:
    if body.mlflow is None:
        return
    uri = body.mlflow.tracking_uri
    if uri is None:
        if settings.mlflow_tracking_uri is None:
            msg = "no tracking server: give mlflow.tracking_uri, or set COMPRESSO_MLFLOW_TRACKING_URI on the server"
            raise Invalid(f"mlflow: {msg}.", errors=[{"loc": ["body", "mlflow", "tracking_uri"], "msg": msg}])
        return
    # A job's own tracking server is reached over HTTP, under the same rules as a webhook (no local files).
    problem = url_problem(uri, what="a tracking URI")
    if problem is None and literal_private(uri) and not settings.webhooks_allow_private:
        problem = "a private, loopback or link-local address needs COMPRESSO_WEBHOOKS__ALLOW_PRIVATE=true on the server"
    if problem is not None:
        raise Invalid(f"mlflow.tracking_uri: {problem}.",
                      errors=[{"loc": ["body", "mlflow", "tracking_uri"], "msg": problem}])


def create_job(session: Session, settings: Settings, tenant: Tenant, body: JobCreate) -> Job:
    model = models_repository.get_owned(session, tenant.id, body.model_id)
    if model is None:
        raise Invalid(
            f"Model {body.model_id} not found: upload it first with POST /v1/models.",
            errors=[{"loc": ["body", "model_id"], "msg": "not found"}],
        )
    dataset = None if body.dataset_id is None else datasets_repository.get_owned(session, tenant.id, body.dataset_id)
    if body.dataset_id is not None and dataset is None:
        raise Invalid(
            f"Dataset {body.dataset_id} not found: upload it first with POST /v1/datasets.",
            errors=[{"loc": ["body", "dataset_id"], "msg": "not found"}],
        )
    validate_job_dataset(dataset)
    recipe = resolve_recipe(body)
    if body.preset is not None and "target" not in body.model_fields_set:
        body = body.model_copy(update={"target": get_preset(body.preset).target})
    if recipe is not None:
        validate_model_references(session, tenant, recipe)
        validate_site_datasets(session, tenant, recipe)
    validate_deployment_country(body.deployment.country)
    validate_webhook_url(body.webhook_url, settings)
    validate_mlflow(body, settings)
    gpu_alive = body.device == "auto" and worker_nodes.serves_queue(
        session, QUEUE_BY_DEVICE["cuda"], utcnow() - timedelta(seconds=settings.heartbeat_stale_seconds)
    )
    device = resolve_device(body.device, settings, body.target, gpu_alive)
    problem = task_problem(body.target, model.task)
    if problem is not None:
        raise Invalid(f"This {model.task} model cannot go to {body.target.describe()}: {problem}.",
                      errors=[{"loc": ["body", "target", "runtime"], "msg": problem}])
    preflight = None
    if recipe is None:
        soft_seconds = (body.time_limits and body.time_limits.soft_seconds) or settings.time_limits.soft_seconds
        preflight = check_goal(body.goal, model, dataset, body.evaluation, body.target, soft_seconds)
    else:
        validate_target(recipe, body.target, device)
        step_problems = step_task_problems(recipe.to_dict()["steps"], model.task)
        if step_problems:
            errors = [{**problem, "loc": ["body", *problem["loc"]]} for problem in step_problems]
            raise Invalid(f"The recipe does not fit this {model.task} model: {RecipeError(step_problems)}.",
                          errors=errors)
        validate_labelled_dataset(recipe, dataset)
    limits.ensure_job_slot(session, settings, tenant)
    job = repository.add(
        session,
        Job(
            tenant_id=tenant.id,
            name=body.name,
            model_id=body.model_id,
            dataset_id=body.dataset_id,
            device=device,
            target=body.target.model_dump(),
            queue=QUEUE_BY_DEVICE[device],
            recipe=recipe.to_dict() if recipe is not None else {"steps": []},
            preset=body.preset,
            goal=body.goal.model_dump(mode="json") if body.goal is not None else None,
            preflight=preflight,
            evaluation=body.evaluation.model_dump(),
            deployment=body.deployment.model_dump(),
            webhook_url=body.webhook_url,
            mlflow=body.mlflow.model_dump() if body.mlflow else None,
            time_limits=body.time_limits.model_dump() if body.time_limits else None,
            status=QUEUED,
            progress=0.0,
            attempts=0,
            cancel_requested=False,
        ),
    )
    job_id, queue = job.id, job.queue
    record_job_event(session, job_id, "queued")
    run_after_commit(session, lambda: dispatch_job(job_id, queue))
    return job


def get_job(session: Session, tenant_id: str, job_id: str) -> Job:
    job = repository.get_owned(session, tenant_id, job_id)
    if job is None:
        raise NotFound(f"Job {job_id} not found.")
    return job


def cancel_job(session: Session, storage: Storage, tenant_id: str, job_id: str) -> Job:
    """A queued job is cancelled at once (with the checkpoints of an earlier attempt, if it had one); a
    running one is flagged and its worker stops it within seconds."""
    job = get_job(session, tenant_id, job_id)
    attempt, now = job.attempts, utcnow()
    if repository.transition(
        session, job_id, (QUEUED,), status=CANCELLED, cancel_requested=True, finished_at=now, stage="cancelled"
    ):
        job_logs_repository.append(session, job_id, attempt, [(API, "cancelled before it started")])
        record_job_event(session, job_id, "cancelled")
        if attempt:
            run_after_commit(session, lambda: forget_checkpoints(job_id, storage))
        return get_job(session, tenant_id, job_id)
    if repository.transition(session, job_id, (RUNNING,), cancel_requested=True):
        job_logs_repository.append(session, job_id, attempt, [(API, "cancel requested; the worker stops the engine")])
        return get_job(session, tenant_id, job_id)
    raise Conflict(f"Job {job_id} is already {job.status}; only queued or running jobs can be cancelled.")


def get_report(session: Session, tenant_id: str, job_id: str) -> dict:
    job = get_job(session, tenant_id, job_id)
    if job.report is None:
        raise Conflict(f"Job {job_id} is {job.status}; its report exists once it has succeeded.")
    return job.report
