"""Lists the registered compression techniques with the JSON schema of their params."""

from typing import Any

from fastapi import APIRouter

from workers.engine.registry import list_techniques

router = APIRouter(prefix="/v1/techniques", tags=["techniques"])


@router.get("")
def get_techniques() -> list[dict[str, Any]]:
    """Every technique a recipe step may name, with its version, what it consumes and produces
    (torch or onnx), whether it needs a dataset, and the JSON schema of its params."""
    return list_techniques()
