"""Serves the Prometheus metrics in the text exposition format."""

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.core.deps import SettingsDep
from app.core.errors import Unauthorized
from app.metrics.collector import registry

router = APIRouter(tags=["health"])

metrics_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="metricsToken",
    description="The value of COMPRESSO_METRICS_TOKEN, where the server sets one; /metrics is open otherwise.",
)


async def check_metrics_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(metrics_bearer)] = None,
) -> None:
    expected = settings.metrics_token
    if expected is None:
        return
    presented = credentials.credentials.strip() if credentials is not None else ""
    # compare_digest: the time taken does not tell how much of the token was right.
    if not presented or not secrets.compare_digest(presented.encode(), expected.get_secret_value().encode()):
        raise Unauthorized(
            "This server protects /metrics: send `Authorization: Bearer <token>` with the value of its "
            "COMPRESSO_METRICS_TOKEN (API keys are not accepted here)."
        )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    dependencies=[Depends(check_metrics_token)],
)
def metrics() -> Response:
    """Jobs by status, job durations, the jobs' own energy and CO2, and upload bytes. Needs the metrics
    token where the server sets COMPRESSO_METRICS_TOKEN."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
