"""Named recipes for the common goals, so a user can ask for "int8-lossless" instead of writing
steps. Each is an ordinary recipe (validated like any other) plus what it is for; the figures
quoted in a description come from benchmarks/engine_bench.py on all-MiniLM-L6-v2.
"""

from dataclasses import dataclass
from typing import Any

from workers.engine.recipe import Recipe


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    recipe: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "recipe": Recipe.from_dict(self.recipe).to_dict()}


PRESETS: tuple[Preset, ...] = (
    Preset(
        name="int8-lossless",
        summary="int8 weights and activations with onnxruntime, embeddings included: about 4x smaller and "
        "faster on CPU, with outputs nearly identical to the original.",
        recipe={"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]},
    ),
)


def list_presets() -> list[dict[str, Any]]:
    return [preset.to_dict() for preset in PRESETS]


def preset_names() -> list[str]:
    return [preset.name for preset in PRESETS]


def preset_recipe(name: str) -> dict[str, Any]:
    """Raises KeyError for an unknown name; `preset_names()` lists the known ones."""
    for preset in PRESETS:
        if preset.name == name:
            return preset.recipe
    raise KeyError(name)
