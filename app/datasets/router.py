"""HTTP routes for uploaded datasets."""

from fastapi import APIRouter, Query, Request, status

from app.core.problems import problem_responses
from app.core.deps import SessionDep, SettingsDep, StorageDep
from app.idempotency.service import IdempotencyKey
from app.core.pagination import Page, PageDep
from app.core.openapi import multipart_upload_body
from app.core.routing import SessionRoute
from app.tenants.auth import TenantDep
from app.datasets import repository, service, suggestions, versions
from app.datasets.schemas import DatasetOut, LabelsIn, SuggestionIn, SuggestionOut

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
    """Deletes the dataset and its file (a site-held dataset: its row only, the site keeps its file); 409 while
    a queued or running job uses it."""
    service.delete_dataset(session, storage, tenant.id, dataset_id)


@router.get("/{dataset_id}/versions", response_model=list[DatasetOut])
def list_versions(dataset_id: str, session: SessionDep, tenant: TenantDep):
    """Every version of the dataset this one belongs to, oldest first."""
    return [DatasetOut.model_validate(item) for item in versions.list_versions(session, tenant.id, dataset_id)]


@router.post(
    "/{dataset_id}/versions",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetOut,
    responses=problem_responses(409, 413),
    openapi_extra=multipart_upload_body(
        "The revised .jsonl or .csv file (e.g. the rows with your labels added); name is optional here."
    ),
)
async def upload_version(
    dataset_id: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKey = None,
):
    """Uploads a file as the next version of the dataset; the version it replaces stays as it was. 409 for a
    site-held dataset: revise it at the site."""
    return await service.upload_dataset(request, session, settings, storage, tenant, idempotency_key, dataset_id)


@router.post(
    "/{dataset_id}/labels", status_code=status.HTTP_201_CREATED, response_model=DatasetOut,
    responses=problem_responses(409),
)
def label_rows(dataset_id: str, body: LabelsIn, session: SessionDep, storage: StorageDep, tenant: TenantDep):
    """Sets (or, with null, removes) the labels of rows, by 0-based row number, in a new version of the
    dataset: the version named stays as it was, so jobs that used it keep meaning what they meant. 409 for a
    site-held dataset, whose rows are not here."""
    return versions.label_rows(session, storage, tenant.id, dataset_id, body.labels)


@router.post(
    "/{dataset_id}/suggest-labels", status_code=status.HTTP_202_ACCEPTED, response_model=SuggestionOut,
    responses=problem_responses(409),
)
def suggest_labels(
    dataset_id: str, body: SuggestionIn, session: SessionDep, tenant: TenantDep,
    n: int = Query(50, description="How many rows to suggest (1 to 1,000)."),
):
    """Queues the choice of the n unlabelled rows whose labels would help a classifier fine-tuned from
    model_id most (uncertainty under a probe fitted on the rows labelled so far, spread over the
    model's embedding space); poll the returned suggestion until it has succeeded. 409 for a site-held
    dataset, whose rows are not here."""
    return SuggestionOut.of(suggestions.request_suggestions(session, tenant.id, dataset_id, body.model_id, n))


@router.get("/{dataset_id}/suggest-labels/{suggestion_id}", response_model=SuggestionOut)
def get_suggestion(dataset_id: str, suggestion_id: str, session: SessionDep, tenant: TenantDep):
    """One suggestion: its status and, once it has succeeded, the rows to label, most useful first."""
    return SuggestionOut.of(suggestions.get_suggestion(session, tenant.id, dataset_id, suggestion_id))
