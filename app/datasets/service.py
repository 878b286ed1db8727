"""Rules for evaluation datasets: validated on upload, kept read-only afterwards (a change is a new
version, see app.datasets.versions)."""

from pathlib import Path


from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.config import Settings
from app.db.session import run_after_commit, run_after_rollback
from app.core.errors import Conflict, NotFound
from app.core.storage import Storage
from app.core.uploads import receive_upload
from app.metrics.collector import upload_bytes
from app.datasets import repository
from app.datasets.orm import Dataset
from app.datasets.parsing import inspect_dataset
from app.datasets.schemas import DatasetOut
from app.db.base import new_id
from app.jobs import repository as jobs_repository
from app.models.service import required_name
from app.idempotency import service as idempotency
from app.tenants import limits
from app.tenants.orm import Tenant
from workers.engine.evaluation.dataset_format import DATASET_SUFFIXES

UPLOAD_ENDPOINT = "POST /v1/datasets"
# What to do instead of changing a site-held dataset here: its rows are only at the site.
REVISE_AT_THE_SITE = (
    "edit the file at the site and register it there with `compresso site add-dataset FILE --site {site}`"
)


async def upload_dataset(
    request: Request, session: Session, settings: Settings, storage: Storage, tenant: Tenant, idempotency_key: str | None,
    parent_id: str | None = None,
) -> Dataset | JSONResponse:
    """The stored dataset; or, for a retry with a used Idempotency-Key, the first upload's response. With
    `parent_id`, the file becomes that dataset's next version (and takes its name unless one is given)."""
    parent = None if parent_id is None else await run_in_threadpool(get_dataset, session, tenant.id, parent_id)
    if parent is not None:
        require_rows_here(parent, "revised here", REVISE_AT_THE_SITE.format(site=parent.site))
    limit = await run_in_threadpool(
        limits.checked_before_streaming, session, settings, tenant, UPLOAD_ENDPOINT, idempotency_key,
        settings.limits.dataset_max_bytes, "COMPRESSO_LIMITS__DATASET_MAX_BYTES",
    )
    with storage.scratch() as scratch:
        upload = await receive_upload(
            request, scratch, limit.max_bytes, allowed_suffixes=DATASET_SUFFIXES, limit_reason=limit.reason
        )
        upload_bytes.labels(kind="dataset").inc(upload.size_bytes)
        name = required_name(upload.fields) if parent is None else upload.fields.get("name") or parent.name
        return await run_in_threadpool(
            idempotency.create_once, session, tenant.id, UPLOAD_ENDPOINT, idempotency_key,
            {"name": name, "filename": upload.filename, "sha256": upload.sha256, "parent_id": parent_id}, 201,
            lambda: add_version(
                session, storage, tenant.id, parent, upload.file_path, upload.filename, name, upload.size_bytes,
                upload.sha256,
            ),
            lambda dataset: DatasetOut.model_validate(dataset).model_dump(mode="json"),
        )


def add_version(
    session: Session, storage: Storage, tenant_id: str, parent: Dataset | None, file_path: Path, filename: str,
    name: str, size_bytes: int, sha256: str,
) -> Dataset:
    """Stores a checked file as a new dataset: a first version, or the next version of `parent`'s lineage."""
    info = inspect_dataset(file_path)
    dataset_id = new_id()
    suffix = ".jsonl" if filename.lower().endswith(".jsonl") else ".csv"
    key = f"datasets/{dataset_id}{suffix}"
    storage.put(file_path, key)
    run_after_rollback(session, lambda: storage.delete(key))
    version = 1 if parent is None else repository.latest_version(session, parent.lineage_id) + 1
    return repository.add(
        session,
        Dataset(
            id=dataset_id, tenant_id=tenant_id, name=name, filename=filename,
            num_rows=info.num_rows, num_labelled=info.num_labelled, columns=info.columns, size_bytes=size_bytes,
            sha256=sha256, storage_key=key, version=version, parent_id=None if parent is None else parent.id,
            lineage_id=dataset_id if parent is None else parent.lineage_id,
        ),
    )


def get_dataset(session: Session, tenant_id: str, dataset_id: str) -> Dataset:
    dataset = repository.get_owned(session, tenant_id, dataset_id)
    if dataset is None:
        raise NotFound(f"Dataset {dataset_id} not found.")
    return dataset


def require_rows_here(dataset: Dataset, action: str, instead: str) -> Dataset:
    """The dataset, when its rows are in central storage; a site-held one is refused (409), since
    nothing here can read its rows."""
    if dataset.site is not None:
        raise Conflict(
            f"Dataset {dataset.id}'s rows are held by site {dataset.site!r}, not here, so they cannot be {action}; "
            f"{instead}.",
            errors=[{"loc": ["path", "dataset_id"], "msg": f"held by site {dataset.site}"}],
        )
    return dataset


def delete_dataset(session: Session, storage: Storage, tenant_id: str, dataset_id: str) -> None:
    """Deletes the row and, for an upload, its file. A site-held dataset's file is on the site's host,
    out of reach: only the row goes (the site removes its file itself)."""
    dataset = get_dataset(session, tenant_id, dataset_id)
    active = jobs_repository.count_active_for_dataset(session, dataset_id)
    if dataset.site is not None:
        active += jobs_repository.count_active_naming(session, tenant_id, dataset_id)
    if active:
        raise Conflict(f"Dataset {dataset_id} is used by {active} queued or running job(s); cancel them first.")
    repository.delete(session, dataset)
    if dataset.site is None:
        run_after_commit(session, lambda: storage.delete(dataset.storage_key))
