"""The deployment target: the runtime and device where the compressed model will run. The result is
built for it and measured on it, and the original is measured on the same device, so speed, energy
and payback compare like with like.

- onnxruntime on cpu (the default) or cuda: an ONNX file (or a .cpz that unpacks to one);
- torch on cpu or cuda: a transformers folder (safetensors in fp32, fp16 or bf16, or int8, int4 and
  fp8 weights through torchao's kernels, recorded in config.json so plain from_pretrained reloads it;
  for a causal LM after llm_quantize, a compressed-tensors checkpoint, which vLLM serves as it is);
- executorch on cpu: a `.pte` program for phones and edge CPUs, on XNNPACK's kernels (fp32, or int8
  weights with int8 activations), measured with ExecuTorch's own runtime.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Runtime = Literal["onnxruntime", "torch", "executorch"]
Device = Literal["cpu", "cuda"]

# Techniques whose output only exists as ONNX: codebooks that onnxruntime expands, and entropy coding
# of those ONNX symbols. low_rank's factorised layers have no transformers form either.
_ONNX_ONLY = {
    "cluster": "cluster stores uint8 indices plus a codebook that only onnxruntime expands at load time",
    "huffman": "huffman entropy-codes the symbols of an ONNX file",
    "low_rank": "low_rank replaces layers by factorised pairs, which transformers cannot rebuild from config.json",
}
# Quantize schemes per runtime, and the devices each needs (torchao has no CPU kernels for these two).
TORCH_SCHEMES = ("fp16", "bf16", "int8_weight_only", "int8_dynamic", "int4_weight_only", "fp8")
ONNX_SCHEMES = ("int8_dynamic", "int8_weight_only", "int4_weight_only", "int8_static", "fp16", "bf16")
# XNNPACK's static int8 (activation ranges calibrated per tensor) kept 0.865 held-out fidelity on MiniLM
# against 0.9989 for dynamic (benchmarks/results/engine_bench_targets.md): not offered.
EXECUTORCH_SCHEMES = ("int8_dynamic",)
SCHEMES_BY_RUNTIME = {"onnxruntime": ONNX_SCHEMES, "torch": TORCH_SCHEMES, "executorch": EXECUTORCH_SCHEMES}
TORCH_CUDA_ONLY_SCHEMES = {
    "fp8": "fp8 matmuls need a GPU with fp8 tensor cores (Ada or Hopper)",
    "int4_weight_only": "torchao's int4 weight-only kernels run on cuda only",
}
# Params of the ONNX quantizer that the torch path does not have.
_ONNX_ONLY_PARAMS = (
    "target_fidelity", "smooth_alpha", "outlier_channels", "calibration_method", "algorithm", "keep_fp32",
    "max_size_ratio", "modules", "qat",
)


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    runtime: Runtime = Field(
        "onnxruntime",
        description="What runs the result: onnxruntime (ONNX), torch (a transformers folder) or executorch (a .pte).",
    )
    device: Device = Field("cpu", description="Where the result runs, and where both models are measured.")

    def describe(self) -> str:
        return f"{self.runtime} on {self.device}"


def _error(loc: list, msg: str, allowed: list | None = None) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "allowed": allowed}


def target_problems(steps: list[dict[str, Any]], target: Target, job_device: str) -> list[dict[str, Any]]:
    """What stops this recipe (its steps as dicts: technique and params) from producing a result for
    `target` on a worker of `job_device`; each problem has loc, msg and allowed, like a RecipeError's."""
    problems = []
    if target.runtime == "executorch" and target.device != "cpu":
        problems.append(_error(
            ["target", "device"], "an executorch target runs on XNNPACK's CPU kernels: use device cpu", ["cpu"]
        ))
    if target.device == "cuda" and job_device != "cuda":
        problems.append(_error(
            ["target", "device"],
            "the result is measured where it will run, so a cuda target needs the job on a GPU worker: "
            'set "device": "cuda" (or "auto" where a GPU worker serves)',
            ["cpu"],
        ))
    for index, step in enumerate(steps):
        technique, params = step.get("technique"), step.get("params") or {}
        loc = ["recipe", "steps", index]
        # torch.export takes factorised layers as they are; transformers cannot rebuild them.
        onnx_only = _ONNX_ONLY if target.runtime == "torch" else {
            name: why for name, why in _ONNX_ONLY.items() if name != "low_rank"
        }
        if target.runtime != "onnxruntime" and technique in onnx_only:
            problems.append(_error(
                [*loc, "technique"],
                f"{technique!r} cannot build the {target.runtime} target: {onnx_only[technique]}; use target "
                "runtime onnxruntime",
            ))
        if target.runtime == "torch" and technique == "prune" and _per_layer_widths(params):
            problems.append(_error(
                [*loc, "params", "structure"],
                "this pruning leaves layers of different widths (heads, or neurons ranked across layers), which "
                "transformers cannot rebuild from config.json; for a torch target prune neurons with scope "
                "'per_layer', or use target runtime onnxruntime or executorch",
            ))
        if technique == "llm_quantize" and target.runtime != "torch":
            problems.append(_error(
                [*loc, "technique"],
                "llm_quantize ships a compressed-tensors checkpoint, which transformers and vLLM run: use target "
                '{"runtime": "torch"}',
            ))
        if technique != "quantize":
            continue
        scheme = params.get("scheme")
        schemes = SCHEMES_BY_RUNTIME[target.runtime]
        if scheme is not None and scheme not in schemes:
            hint = ' (fp8 is for target {"runtime": "torch", "device": "cuda"})' if scheme == "fp8" else ""
            problems.append(_error(
                [*loc, "params", "scheme"], f"scheme {scheme!r} has no {target.runtime} form{hint}", list(schemes)
            ))
        if target.runtime == "onnxruntime":
            continue
        if target.runtime == "torch" and scheme in TORCH_CUDA_ONLY_SCHEMES and target.device != "cuda":
            problems.append(_error(
                [*loc, "params", "scheme"],
                f"{TORCH_CUDA_ONLY_SCHEMES[scheme]}: use target device cuda, or target runtime onnxruntime on the CPU",
            ))
        for name in _ONNX_ONLY_PARAMS:
            if params.get(name) not in (None, [], False):
                problems.append(_error(
                    [*loc, "params", name],
                    f"{name} belongs to the ONNX quantizer, which a {target.runtime} target does not use: remove it, "
                    "or use target runtime onnxruntime",
                ))
    return problems


def _per_layer_widths(prune_params: dict[str, Any]) -> bool:
    """Whether a prune step leaves layers whose shapes config.json cannot express."""
    structure = prune_params.get("structure")
    return structure == "heads" or (structure == "neurons" and prune_params.get("scope", "global") == "global")


def changes_task(steps) -> bool:  # noqa: ANN001 (technique configs)
    """Whether a step of the recipe returns a model of another task (finetune)."""
    return any(step.output_task is not None for step in steps)


def step_task_problems(steps: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """The recipe's steps (as dicts) that cannot take the model of `task` as the steps before them leave it,
    as RecipeError-style problems."""
    problems = []
    original_task = task
    for index, step in enumerate(steps):
        loc = ["recipe", "steps", index, "technique"]
        technique = step.get("technique")
        if technique == "federated" and task != original_task:
            problems.append(_error(
                loc, "federated trains the model to reproduce the uploaded original, whose task an earlier finetune "
                "step changed: put federated before finetune",
            ))
        if technique == "llm_quantize" and task != "text-generation":
            problems.append(_error(
                loc, f"llm_quantize compresses causal language models, and this model's task is {task}: use quantize"
            ))
        if technique == "finetune":
            if task == "text-generation":
                problems.append(_error(
                    loc, "finetune trains encoders and classifiers for a classification task; this model is a causal "
                    "language model: use distill to adapt it",
                ))
            task = "text-classification"
    return problems


def task_problem(target: Target, task: str) -> str | None:
    """Why `target` cannot take a model of `task`, or None."""
    if target.runtime == "executorch" and task == "text-generation":
        return (
            "an executorch target exports encoders and classifiers; a causal LM on a phone needs ExecuTorch's "
            "LLM export with a KV cache, which compresso does not do: use target torch or onnxruntime"
        )
    return None
