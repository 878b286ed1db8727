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


async def upload_dataset(
    request: Request, session: Session, settings: Settings, storage: Storage, tenant: Tenant, idempotency_key: str | None,
    parent_id: str | None = None,
) -> Dataset | JSONResponse:
    """The stored dataset; or, for a retry with a used Idempotency-Key, the first upload's response. With
    `parent_id`, the file becomes that dataset's next version (and takes its name unless one is given)."""
    parent = None if parent_id is None else await run_in_threadpool(get_dataset, session, tenant.id, parent_id)
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


def delete_dataset(session: Session, storage: Storage, tenant_id: str, dataset_id: str) -> None:
    dataset = get_dataset(session, tenant_id, dataset_id)
    active = jobs_repository.count_active_for_dataset(session, dataset_id)
    if active:
        raise Conflict(f"Dataset {dataset_id} is used by {active} queued or running job(s); cancel them first.")
    repository.delete(session, dataset)
    run_after_commit(session, lambda: storage.delete(dataset.storage_key))
