"""Server-rendered dashboard pages over the same services as the API.

With authentication on, a browser signs in at /login with an API key; it is kept in an HttpOnly,
SameSite=Strict cookie that the API accepts like a Bearer header (see app.tenants.auth).
"""

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from markupsafe import Markup

from app.config import get_settings
from app.core.deps import SessionDep, SettingsDep, StorageDep
from app.core.errors import AppError, Conflict, Invalid, Unauthorized
from app.core.routing import SessionRoute
from app.dashboard import service
from app.datasets import suggestions, versions
from app.datasets.schemas import RowLabel
from app.tenants import service as tenants_service
from app.tenants.auth import KEY_COOKIE, PendingTenant, bearer_scheme, current_tenant
from app.tenants.orm import Tenant

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
# Charts are SVG built by app.dashboard.charts, which escapes every piece of user text itself.
templates.env.filters["svg"] = Markup
router = APIRouter(route_class=SessionRoute, include_in_schema=False)
KEY_COOKIE_DAYS = 30


class LoginRequired(AppError):
    """Raised by a page that needs a signed-in browser; app.main answers it with a redirect to /login."""

    status_code = 303

    def __init__(self, next_path: str):
        super().__init__("Sign in with an API key.")
        self.next_path = next_path


async def page_tenant(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
) -> PendingTenant:
    """The API's check, but a browser without a valid key is sent to the login form."""
    try:
        pending = await current_tenant(request, settings, credentials)
    except Unauthorized as exc:
        raise LoginRequired(request.url.path) from exc
    return replace(pending, on_refused=lambda _refusal: LoginRequired(request.url.path))


PageTenant = Annotated[Tenant, Depends(page_tenant)]


def render(request: Request, template: str, tenant: Tenant | None, context: dict[str, Any], status_code: int = 200):
    auth_enabled = get_settings().auth_enabled
    return templates.TemplateResponse(
        request, template, {**context, "tenant": tenant, "auth_enabled": auth_enabled}, status_code=status_code
    )


def safe_next(next_path: str | None) -> str:
    """Only a path on this site: an open redirect to another host would help phishing."""
    if next_path and next_path.startswith("/") and not next_path.startswith("//") and "\\" not in next_path:
        return next_path
    return "/"


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, session: SessionDep, tenant: PageTenant):
    return render(request, "overview.html", tenant, service.overview(session, tenant.id))


@router.get("/models", response_class=HTMLResponse)
def models(request: Request, session: SessionDep, tenant: PageTenant):
    return render(request, "models.html", tenant, service.models_page(session, tenant.id))


@router.get("/datasets", response_class=HTMLResponse)
def datasets(request: Request, session: SessionDep, tenant: PageTenant):
    return render(request, "datasets.html", tenant, service.datasets_page(session, tenant.id))


@router.get("/datasets/{dataset_id}/label", response_class=HTMLResponse)
def labelling(request: Request, dataset_id: str, session: SessionDep, tenant: PageTenant, suggestion: str | None = None):
    """Ask which rows to label, then label them one click per row; saving makes the dataset's next version."""
    return _labelling(request, session, tenant, dataset_id, suggestion)


def _labelling(
    request: Request, session, tenant: Tenant, dataset_id: str, suggestion: str | None,  # noqa: ANN001
    error: AppError | None = None,
):
    """The labelling page; a refused form is shown again with the reason, in the page's own words."""
    context = service.labelling_page(session, tenant.id, dataset_id, suggestion)
    context |= {"saved": request.query_params.get("saved"), "error": None if error is None else error.detail}
    return render(request, "label.html", tenant, context, status_code=200 if error is None else error.status_code)


@router.post("/datasets/{dataset_id}/suggest")
def ask_for_suggestions(
    request: Request, dataset_id: str, session: SessionDep, tenant: PageTenant,
    model_id: Annotated[str, Form(max_length=64)], n: Annotated[int, Form()] = 50,
):
    try:
        suggestion = suggestions.request_suggestions(session, tenant.id, dataset_id, model_id, n)
    except (Invalid, Conflict) as exc:  # Conflict: a site-held dataset, whose rows are not here
        return _labelling(request, session, tenant, dataset_id, None, exc)
    return RedirectResponse(f"/datasets/{dataset_id}/label?suggestion={suggestion.id}", status_code=303)


@router.post("/datasets/{dataset_id}/label")
async def save_labels(request: Request, dataset_id: str, session: SessionDep, storage: StorageDep, tenant: PageTenant):
    """Fields label-<row> (a class clicked) and new-<row> (a class typed); a typed one wins."""
    form = await request.form()
    chosen: dict[int, str] = {}
    for key, value in form.multi_items():
        kind, _, row = key.partition("-")
        if kind in ("label", "new") and row.isdigit() and isinstance(value, str) and value.strip():
            if kind == "new" or int(row) not in chosen:
                chosen[int(row)] = value.strip()[:200]
    suggestion = form.get("suggestion") if isinstance(form.get("suggestion"), str) else None
    try:
        if not chosen:
            raise Invalid("No row was labelled: click a class (or type one) for at least one row, then save.")
        labels = [RowLabel(row=row, label=label) for row, label in sorted(chosen.items())]
        version = await run_in_threadpool(versions.label_rows, session, storage, tenant.id, dataset_id, labels)
    except (Invalid, Conflict) as exc:
        return await run_in_threadpool(_labelling, request, session, tenant, dataset_id, suggestion, exc)
    return RedirectResponse(f"/datasets/{version.id}/label?saved={len(labels)}", status_code=303)


# Declared before /jobs/{job_id}, which would otherwise take "new" for an id.
@router.get("/jobs/new", response_class=HTMLResponse)
def new_job(request: Request, session: SessionDep, tenant: PageTenant):
    return render(request, "new_job.html", tenant, service.new_job_page(session, tenant.id))


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job(request: Request, job_id: str, session: SessionDep, tenant: PageTenant):
    return render(request, "job.html", tenant, service.job_page(session, tenant.id, job_id))


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, settings: SettingsDep, next: str = "/"):  # noqa: A002 - the query parameter's name
    if not settings.auth_enabled:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "login.html", None, {"next": safe_next(next), "error": None})


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    session: SessionDep,
    key: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form(max_length=2000)] = "/",  # noqa: A002 - the form field's name
):
    try:
        tenants_service.authenticate(session, key.strip())
    except Unauthorized as exc:
        context = {"next": safe_next(next), "error": exc.detail}
        return render(request, "login.html", None, context, status_code=401)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        KEY_COOKIE,
        key.strip(),
        max_age=KEY_COOKIE_DAYS * 86400,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout():
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(KEY_COOKIE, httponly=True, samesite="strict")
    return response
