"""Lists the named recipe presets a job may ask for with {"preset": NAME}, and what a {"goal": ...} may search."""

from typing import Any

from fastapi import APIRouter

from workers.engine.presets import list_presets
from workers.engine.search.goal import FAMILY_DESCRIPTIONS, TRAINING_FAMILIES, Goal

router = APIRouter(prefix="/v1/recipes", tags=["recipes"])


@router.get("/presets")
def get_presets() -> list[dict[str, Any]]:
    """Each preset's name, what it is for, and the full recipe it stands for (which a job may also
    send as its own `recipe`, edited)."""
    return list_presets()


@router.get("/goal")
def get_goal_schema() -> dict[str, Any]:
    """The goal a job may give instead of a recipe: its JSON schema, and the candidate families it searches."""
    return {
        "schema": Goal.model_json_schema(),
        "families": [
            {"name": name, "summary": summary, "trains": name in TRAINING_FAMILIES}
            for name, summary in FAMILY_DESCRIPTIONS.items()
        ],
    }
