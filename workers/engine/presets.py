"""Named recipes for the common goals, so a user can ask for "int8-lossless" instead of writing
steps. Each is an ordinary recipe (validated like any other) plus what it is for; the figures
quoted in a description come from benchmarks/engine_bench.py on all-MiniLM-L6-v2.
"""

from dataclasses import dataclass
from typing import Any

from workers.engine.recipe import Recipe
from workers.engine.target import Target

_TORCH_CUDA = Target(runtime="torch", device="cuda")


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    recipe: dict[str, Any]
    # Where the result is meant to run; a job that names the preset and no target of its own gets it.
    target: Target = Target()
    # The one kind of model the preset is for (causal LMs for the llm-* presets); None: any.
    task: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "summary": self.summary, "target": self.target.model_dump(), "task": self.task,
            "recipe": Recipe.from_dict(self.recipe).to_dict(),
        }


_INT8 = {
    "technique": "quantize",
    # The layers that lose most get their 8 largest activation channels computed apart in fp32, until
    # the outputs are 0.9983 close on the calibration texts (a margin for 0.998 on unseen texts). On
    # MiniLM this kept 97% of plain int8's speed at 0.9983, where the earlier weight-only fallback (int8
    # weights, float activations for the sensitive layers, after smoothing) kept ~80% (benchmarks/
    # results/engine_bench_int8_width.md and engine_bench_int8_outliers.md).
    "params": {"scheme": "int8_dynamic", "target_fidelity": 0.9983, "fallback": "outliers"},
}
_HUFFMAN = {"technique": "huffman", "params": {}}
_DISTILL_HALF = {"technique": "distill", "params": {
    "student_depth": 0.5, "augment": "splice", "augment_copies": 40, "epochs": 3, "lr": 5e-4,
}}

PRESETS: tuple[Preset, ...] = (
    Preset(
        name="int8-lossless",
        summary="int8 weights and activations (onnxruntime), embeddings included; the most sensitive layers "
        "compute their few outlier activation channels apart in fp32 until the outputs are 0.998 close to "
        "the original: about 4x smaller and 1.5x or more faster on CPU.",
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
        "to reproduce the original's outputs and hidden states on the job's texts: about 2x faster. Needs a "
        "few hundred texts or more; about 14 minutes on 2 CPU cores for a 22M-parameter encoder and 700 texts.",
        # On MiniLM with 685 texts (held-out fidelity, benchmarks/engine_bench.py and the distill module): the
        # hidden states weighted 30x instead of 1x, at lr 5e-4, lifted 20 spliced copies for 2 epochs from
        # 0.9145 to 0.9207, and longer training kept helping, less each time (4 copies: 0.9064 for 2 epochs,
        # 0.9130 for 4, 0.9164 for 8; 50 copies for 4 epochs 0.9277 in 1,283 s). This recipe, 40 copies for
        # 3 epochs: 0.9266 in an 839 s job (batches grouped by length); 20 copies for 3 epochs gave 0.9229
        # in 750 s with random batches. The default training before the weight went to 30 (2 dropout
        # copies, 4 epochs, lr 2e-4, weight 1) gave 0.8925. Weight 30 is the shared default now.
        recipe={"steps": [_DISTILL_HALF]},
    ),
    Preset(
        name="smallest",
        summary="45% of the FFN neurons removed and recovered by distillation, then 16 shared values per layer "
        "tensor and 4 for the embeddings, Huffman-coded: the fewest bytes, at a fidelity cost.",
        # Recovery on 16 copies of each text spliced to others (augment "splice") for 2 epochs: new contexts
        # for the dataset's own words, where a few hundred texts alone let a student overfit them. On
        # MiniLM: 0.0769x at 0.9098 held-out fidelity, 0.077x at 0.9116 once batches were grouped by length,
        # and 0.9175 with the hidden states weighted 30 instead of 1 (now every recovery's default).
        # Half the neurons with the default recovery (2 dropout copies, 4 epochs) gave 0.075x at 0.8878;
        # recovering on 8 spliced copies 0.8960; 40% with 16 spliced copies 0.0787x at 0.9165
        # (benchmarks/engine_bench.py, training as in the distill module).
        recipe={"steps": [
            {"technique": "prune", "params": {
                "structure": "neurons", "sparsity": 0.45, "scope": "per_layer", "importance": "gradient",
                "recover": {"augment": "splice", "augment_copies": 16, "epochs": 2},
            }},
            {"technique": "cluster", "params": {"bits": 4, "embedding_bits": 2}},
            _HUFFMAN,
        ]},
    ),
    Preset(
        name="gpu-bf16",
        summary="For serving on a GPU with PyTorch: the model in bf16, a transformers folder that "
        "from_pretrained reloads; half the bytes, on the GPU's bf16 tensor cores.",
        recipe={"steps": [{"technique": "quantize", "params": {"scheme": "bf16"}}]},
        target=_TORCH_CUDA,
    ),
    Preset(
        name="gpu-fp8",
        summary="For serving on an Ada or Hopper GPU with PyTorch: fp8 weights (one scale per row) and "
        "activations quantized per token, computed by torchao's fp8 kernels; a transformers folder.",
        recipe={"steps": [{"technique": "quantize", "params": {"scheme": "fp8"}}]},
        target=_TORCH_CUDA,
    ),
    Preset(
        name="gpu-distill-half",
        summary="distill-half trained on the GPU, then cast to bf16 for serving there: half the layers and "
        "half the bytes per weight; a transformers folder.",
        recipe={"steps": [_DISTILL_HALF, {"technique": "quantize", "params": {"scheme": "bf16"}}]},
        target=_TORCH_CUDA,
    ),
)



def _llm_preset(name: str, summary: str, scheme: str, **params: Any) -> Preset:
    steps = [{"technique": "llm_quantize", "params": {"scheme": scheme, **params}}]
    return Preset(name=name, summary=summary, recipe={"steps": steps}, target=_TORCH_CUDA, task="text-generation")


# For causal LMs served by vLLM or transformers on a GPU; the figures are in benchmarks/results/llm_bench.md.
LLM_PRESETS: tuple[Preset, ...] = (
    _llm_preset(
        "llm-w4a16",
        "Causal LMs: 4-bit weights in groups of 128 by GPTQ with activation order, 16-bit activations; a "
        "compressed-tensors checkpoint for vLLM (Marlin kernels) about 0.3x the bf16 bytes. The lm_head stays 16-bit.",
        "w4a16",
    ),
    _llm_preset(
        "llm-w8a8",
        "Causal LMs: SmoothQuant, then GPTQ to int8 per-channel weights with int8 activations quantized per "
        "token: half the bf16 bytes, on int8 tensor cores, near-lossless.",
        "w8a8",
    ),
    _llm_preset(
        "llm-fp8",
        "Causal LMs on Hopper or Ada GPUs: fp8 per-channel weights and per-token dynamic fp8 activations, with "
        "no calibration data needed; half the bf16 bytes.",
        "fp8",
    ),
    _llm_preset(
        "llm-2of4-fp8",
        "Causal LMs: SparseGPT removes two weights in every four, then fp8 as llm-fp8; for runtimes with 2:4 "
        "sparse kernels. The zeros are stored as they are (compressed-tensors no longer packs 2:4), so the bytes "
        "are llm-fp8's. Loses more quality than the others: follow it with distillation to recover.",
        "fp8", sparsity="2:4",
    ),
)
PRESETS = PRESETS + LLM_PRESETS


def list_presets() -> list[dict[str, Any]]:
    return [preset.to_dict() for preset in PRESETS]


def preset_names() -> list[str]:
    return [preset.name for preset in PRESETS]


def get_preset(name: str) -> Preset:
    """Raises KeyError for an unknown name; `preset_names()` lists the known ones."""
    for preset in PRESETS:
        if preset.name == name:
            return preset
    raise KeyError(name)


def preset_recipe(name: str) -> dict[str, Any]:
    return get_preset(name).recipe
