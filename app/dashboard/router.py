"""Server-rendered dashboard pages, reading through the same repositories as the API."""

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from app.core.deps import SessionDep
from app.datasets import repository as datasets_repository
from app.jobs import repository as jobs_repository
from app.models import repository as models_repository

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, session: SessionDep):
    return templates.TemplateResponse(
        request,
        "overview.html",
        {
            "models": models_repository.list_all(session),
            "datasets": datasets_repository.list_all(session),
            "jobs": jobs_repository.list_all(session),
        },
    )
