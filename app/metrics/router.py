"""Serves the Prometheus metrics in the text exposition format."""

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.metrics.collector import registry

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics() -> Response:
    """Jobs by status, job durations, the jobs' own energy and CO2, and upload bytes."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
