"""Lists the registered compression techniques with the JSON schema of their params."""

from typing import Any

from fastapi import APIRouter

from workers.engine.registry import list_techniques

router = APIRouter(prefix="/v1/techniques", tags=["techniques"])


@router.get("")
def get_techniques() -> list[dict[str, Any]]:
    return list_techniques()
