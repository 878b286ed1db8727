"""Rules for uploaded models: safe intake of an archive, and deletion that keeps running jobs whole."""

from pathlib import Path

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.config import Settings
from app.core.archive import extract_archive
from app.db.session import run_after_commit, run_after_rollback
from app.core.errors import Conflict, Invalid, NotFound
from app.core.storage import Storage
from app.core.uploads import receive_upload
from app.metrics.collector import upload_bytes
from app.db.base import new_id
from app.jobs import repository as jobs_repository
from app.models import repository
from app.models.orm import Model
from app.models.schemas import ModelOut
from app.idempotency import service as idempotency
from app.tenants import limits
from app.tenants.orm import Tenant
from workers.engine.model_folder import ModelFolderError, inspect_model_folder

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")
UPLOAD_ENDPOINT = "POST /v1/models"
NAME_MAX_CHARS = 200


def required_name(fields: dict[str, str]) -> str:
    name = fields.get("name", "").strip()
    if not name:
        raise Invalid("Form field 'name' is required: give the upload a human-readable name.")
    if len(name) > NAME_MAX_CHARS:
        raise Invalid(f"Form field 'name' is longer than {NAME_MAX_CHARS} characters.")
    return name


def _register_extracted(
    session: Session,
    storage: Storage,
    settings: Settings,
    tenant: Tenant,
    archive: Path,
    scratch: Path,
    name: str,
    sha256: str,
) -> Model:
    folder = extract_archive(
        archive,
        scratch / "extracted",
        max_extracted_bytes=settings.limits.extracted_max_bytes,
        max_files=settings.limits.archive_max_files,
    )
    try:
        info = inspect_model_folder(folder)
    except ModelFolderError as exc:
        raise Invalid(str(exc)) from exc
    limits.ensure_room(session, settings, tenant, info.size_bytes)
    model_id = new_id()
    key = f"models/{model_id}"
    storage.put(folder, key)
    run_after_rollback(session, lambda: storage.delete(key))
    return repository.add(
        session,
        Model(
            id=model_id,
            tenant_id=tenant.id,
            name=name,
            status="ready",
            architecture=info.architecture,
            model_type=info.model_type,
            task=info.task,
            num_parameters=info.num_parameters,
            size_bytes=info.size_bytes,
            sha256=sha256,
            storage_key=key,
        ),
    )


async def upload_model(
    request: Request, session: Session, settings: Settings, storage: Storage, tenant: Tenant, idempotency_key: str | None
) -> Model | JSONResponse:
    """The stored model; or, for a retry with a used Idempotency-Key, the first upload's response."""
    limit = await run_in_threadpool(
        limits.checked_before_streaming, session, settings, tenant, UPLOAD_ENDPOINT, idempotency_key,
        settings.limits.upload_max_bytes, "COMPRESSO_LIMITS__UPLOAD_MAX_BYTES",
    )
    with storage.scratch() as scratch:
        upload = await receive_upload(
            request, scratch, limit.max_bytes, allowed_suffixes=ARCHIVE_SUFFIXES, limit_reason=limit.reason
        )
        upload_bytes.labels(kind="model").inc(upload.size_bytes)
        name = required_name(upload.fields)
        return await run_in_threadpool(
            idempotency.create_once, session, tenant.id, UPLOAD_ENDPOINT, idempotency_key,
            {"name": name, "filename": upload.filename, "sha256": upload.sha256}, 201,
            lambda: _register_extracted(session, storage, settings, tenant, upload.file_path, scratch, name, upload.sha256),
            lambda model: ModelOut.model_validate(model).model_dump(mode="json"),
        )


def get_model(session: Session, tenant_id: str, model_id: str) -> Model:
    model = repository.get_owned(session, tenant_id, model_id)
    if model is None:
        raise NotFound(f"Model {model_id} not found.")
    return model


def delete_model(session: Session, storage: Storage, tenant_id: str, model_id: str) -> None:
    model = get_model(session, tenant_id, model_id)
    active = jobs_repository.count_active_for_model(session, model_id)
    if active:
        raise Conflict(f"Model {model_id} is used by {active} queued or running job(s); cancel them first.")
    repository.delete(session, model)
    run_after_commit(session, lambda: storage.delete(model.storage_key))
