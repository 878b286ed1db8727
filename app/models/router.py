"""HTTP routes for uploaded models."""

from fastapi import APIRouter, Request, status

from app.core.problems import problem_responses
from app.core.deps import SessionDep, SettingsDep, StorageDep
from app.idempotency.service import IdempotencyKey
from app.core.pagination import Page, PageDep
from app.core.openapi import multipart_upload_body
from app.core.routing import SessionRoute
from app.tenants.auth import TenantDep
from app.models import repository, service
from app.models.schemas import ModelOut

router = APIRouter(route_class=SessionRoute, prefix="/v1/models", tags=["models"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelOut,
    responses=problem_responses(413),
    openapi_extra=multipart_upload_body(
        "A .zip or .tar.gz of a Hugging Face model folder: config.json, *.safetensors, tokenizer files."
    ),
)
async def upload_model(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKey = None,
):
    """Uploads a model archive. The body is streamed to disk and hashed on the way."""
    return await service.upload_model(request, session, settings, storage, tenant, idempotency_key)


@router.get("", response_model=Page[ModelOut])
def list_models(session: SessionDep, tenant: TenantDep, page: PageDep):
    """Newest first, a page at a time."""
    items, next_cursor = repository.list_page(session, tenant.id, page)
    return Page[ModelOut](items=[ModelOut.model_validate(item) for item in items], next_cursor=next_cursor)


@router.get("/{model_id}", response_model=ModelOut)
def get_model(model_id: str, session: SessionDep, tenant: TenantDep):
    """One uploaded model: its architecture, task, parameters, size and sha256."""
    return service.get_model(session, tenant.id, model_id)


@router.delete("/{model_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(409))
def delete_model(model_id: str, session: SessionDep, storage: StorageDep, tenant: TenantDep) -> None:
    """Deletes the model and its files; 409 while a queued or running job uses it. Finished jobs keep their reports."""
    service.delete_model(session, storage, tenant.id, model_id)
