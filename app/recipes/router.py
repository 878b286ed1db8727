"""Lists the named recipe presets a job may ask for with {"preset": NAME}."""

from typing import Any

from fastapi import APIRouter

from workers.engine.presets import list_presets

router = APIRouter(prefix="/v1/recipes", tags=["recipes"])


@router.get("/presets")
def get_presets() -> list[dict[str, Any]]:
    """Each preset's name, what it is for, and the full recipe it stands for (which a job may also
    send as its own `recipe`, edited)."""
    return list_presets()
