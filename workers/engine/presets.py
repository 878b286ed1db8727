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


_INT8 = {
    "technique": "quantize",
    # Smoothing migrates activation outliers into the weights; the few layers that still lose most
    # (on MiniLM, FFN outputs) keep int8 weights but float activations until the outputs are 0.998 close.
    "params": {"scheme": "int8_dynamic", "smooth_alpha": 0.5, "target_fidelity": 0.998, "fallback": "weight_only"},
}
_HUFFMAN = {"technique": "huffman", "params": {}}

PRESETS: tuple[Preset, ...] = (
    Preset(
        name="int8-lossless",
        summary="int8 weights and activations (onnxruntime), embeddings included, smoothed, with the most "
        "sensitive layers kept weight-only until the outputs are 0.998 close to the original: about 4x "
        "smaller and faster on CPU.",
        recipe={"steps": [_INT8]},
    ),
    Preset(
        name="int8-packed",
        summary="int8-lossless, then Huffman-coded into a .cpz (`compresso unpack` restores the ONNX folder): "
        "the same model and outputs in about a quarter fewer bytes.",
        recipe={"steps": [_INT8, _HUFFMAN]},
    ),
    Preset(
        name="small",
        summary="Weight sharing at 32 values per tensor with error compensation, Huffman-coded (under 5 bits "
        "per weight on disk): about 6x smaller with outputs 0.99 close; ships as a .cpz.",
        recipe={"steps": [{"technique": "cluster", "params": {"bits": 5}}, _HUFFMAN]},
    ),
    Preset(
        name="distill-half",
        summary="A student with half the layers (the ones whose removal changes the outputs least), trained "
        "to reproduce the original on the job's texts: about 2x faster. Needs a few hundred texts or more.",
        recipe={"steps": [{"technique": "distill", "params": {"student_depth": 0.5}}]},
    ),
    Preset(
        name="smallest",
        summary="Half the FFN neurons removed and recovered by distillation, then 16 shared values per layer "
        "tensor and 4 for the embeddings, Huffman-coded: the fewest bytes, at a fidelity cost.",
        recipe={"steps": [
            {"technique": "prune", "params": {"structure": "neurons", "sparsity": 0.5, "scope": "per_layer",
                                              "importance": "gradient", "recover": {}}},
            {"technique": "cluster", "params": {"bits": 4, "embedding_bits": 2}},
            _HUFFMAN,
        ]},
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
