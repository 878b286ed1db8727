"""HTTP routes for uploaded datasets."""

from fastapi import APIRouter, Request, status

from app.core.problems import problem_responses
from app.core.deps import SessionDep, SettingsDep, StorageDep
from app.idempotency.service import IdempotencyKey
from app.core.pagination import Page, PageDep
from app.core.openapi import multipart_upload_body
from app.core.routing import SessionRoute
from app.tenants.auth import TenantDep
from app.datasets import repository, service
from app.datasets.schemas import DatasetOut

router = APIRouter(route_class=SessionRoute, prefix="/v1/datasets", tags=["datasets"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetOut,
    responses=problem_responses(413),
    openapi_extra=multipart_upload_body(
        "A .jsonl or .csv file with column text, and optional text_pair, label and slice."
    ),
)
async def upload_dataset(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKey = None,
):
    """Uploads an evaluation dataset. The body is streamed to disk and hashed on the way."""
    return await service.upload_dataset(request, session, settings, storage, tenant, idempotency_key)


@router.get("", response_model=Page[DatasetOut])
def list_datasets(session: SessionDep, tenant: TenantDep, page: PageDep):
    """Newest first, a page at a time."""
    items, next_cursor = repository.list_page(session, tenant.id, page)
    return Page[DatasetOut](items=[DatasetOut.model_validate(item) for item in items], next_cursor=next_cursor)


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep):
    """One uploaded dataset: its rows, columns, size and sha256."""
    return service.get_dataset(session, tenant.id, dataset_id)


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(409))
def delete_dataset(dataset_id: str, session: SessionDep, storage: StorageDep, tenant: TenantDep) -> None:
    """Deletes the dataset and its file; 409 while a queued or running job uses it."""
    service.delete_dataset(session, storage, tenant.id, dataset_id)
