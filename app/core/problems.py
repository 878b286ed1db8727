"""Errors as RFC 9457 problem details: `application/problem+json` with a stable `type` per kind of
problem, plus compresso's `errors` list ({loc, msg, allowed}) that points at the fields to fix.

Each `type` is a path on this server (`/problems/<slug>`), which answers with what the problem
means and how to fix it, so a client can branch on `type` and a person can look it up.
"""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.core.errors import AppError

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "/problems/"


class ProblemType(BaseModel):
    slug: str
    title: str
    status: int
    description: str


PROBLEM_TYPES: dict[str, ProblemType] = {
    problem.slug: problem
    for problem in (
        ProblemType(slug="bad-request", title="Bad request", status=400,
                    description="The request cannot be processed as sent; `detail` says what to change."),
        ProblemType(slug="unauthorized", title="API key missing or not valid", status=401,
                    description="Send `Authorization: Bearer <key>` with an active key of your tenant."),
        ProblemType(slug="not-found", title="Not found", status=404,
                    description="No such object for your tenant: it never existed, was deleted, or is "
                    "another tenant's."),
        ProblemType(slug="method-not-allowed", title="Method not allowed", status=405,
                    description="This path does not accept that HTTP method; see /docs."),
        ProblemType(slug="conflict", title="Conflict with the object's state", status=409,
                    description="The object is in a state that forbids this (a model used by a running job, "
                    "a job already finished, ...)."),
        ProblemType(slug="payload-too-large", title="Too large", status=413,
                    description="The upload is over a size limit or the tenant's storage quota; `detail` names "
                    "which."),
        ProblemType(slug="invalid-request", title="Invalid request", status=422,
                    description="Fields failed validation; each entry of `errors` gives its `loc`, `msg` and, "
                    "where the values are few, the `allowed` ones."),
        ProblemType(slug="idempotency-key-reused", title="Idempotency-Key reused for another request",
                    status=422,
                    description="This Idempotency-Key was already used with a different request; use a new "
                    "key for a new request."),
        ProblemType(slug="too-many-requests", title="Limit reached", status=429,
                    description="The tenant is at a limit (e.g. concurrent jobs); retry after `Retry-After` "
                    "seconds."),
        ProblemType(slug="service-unavailable", title="Service unavailable", status=503,
                    description="A service compresso depends on (the database) is unreachable; retry after "
                    "`Retry-After` seconds."),
    )
}
SLUG_BY_STATUS = {
    400: "bad-request", 401: "unauthorized", 404: "not-found", 405: "method-not-allowed", 409: "conflict",
    413: "payload-too-large", 422: "invalid-request", 429: "too-many-requests", 503: "service-unavailable",
}


class FieldError(BaseModel):
    loc: list[str | int] = Field(description='Where: e.g. ["body", "recipe", "steps", 0, "params", "scheme"].')
    msg: str
    allowed: list[Any] | None = Field(None, description="The accepted values, where they are few.")


class Problem(BaseModel):
    """RFC 9457 problem details, with compresso's `errors` extension."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{
                "type": "/problems/invalid-request", "title": "Invalid request", "status": 422,
                "detail": "Invalid recipe: recipe.steps.0.params.scheme: Input should be 'int8_dynamic'",
                "instance": "/v1/jobs",
                "errors": [{"loc": ["body", "recipe", "steps", 0, "params", "scheme"],
                            "msg": "Input should be 'int8_dynamic'", "allowed": ["int8_dynamic"]}],
            }]
        }
    )

    type: str = Field(description="Stable identifier of the kind of problem; GET it for an explanation.")
    title: str
    status: int
    detail: str = Field(description="What went wrong with this request, and what to fix.")
    instance: str = Field(description="The path of the request.")
    errors: list[FieldError] = Field(default_factory=list)


def problem_response(
    status: int,
    detail: str,
    instance: str,
    *,
    slug: str | None = None,
    errors: list[dict] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    problem = PROBLEM_TYPES[slug or SLUG_BY_STATUS.get(status, "bad-request")]
    body = {
        "type": PROBLEM_BASE + problem.slug,
        "title": problem.title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "errors": errors or [],
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def app_error_response(exc: AppError, instance: str) -> JSONResponse:
    return problem_response(
        exc.status_code, exc.detail, instance, slug=exc.problem, errors=exc.errors, headers=exc.headers
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses, in the problem shape. FastAPI files them
    under application/json; `use_problem_media_type` moves them to application/problem+json."""
    return {
        status: {"model": Problem, "description": PROBLEM_TYPES[SLUG_BY_STATUS[status]].title}
        for status in statuses
    }


def use_problem_media_type(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrites a generated OpenAPI document so every error response says what is really sent."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status[0] in "45" and "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    return schema


router = APIRouter(tags=["problems"])


@router.get("/problems/{slug}", response_model=ProblemType, responses=problem_responses(404, 422))
def describe_problem(slug: str) -> ProblemType:
    """What a problem `type` means and how to fix it."""
    problem = PROBLEM_TYPES.get(slug)
    if problem is None:
        raise AppError(f"No problem type {slug!r}; known: {', '.join(sorted(PROBLEM_TYPES))}.", status_code=404)
    return problem
