"""The search space: each family's params, as Optuna suggestions, and the recipe each choice makes.

The recipes are ordinary ones (validated like a user's), so any point of the search can be re-run as a
job of its own. Training families have a quick rung (little training) that is tried first; the full
recipe only runs where the quick one shows it can meet the goal (successive halving with two rungs).
"""

from dataclasses import dataclass, field
from typing import Any, Literal

import optuna

from workers.engine.search.goal import LLM_FAMILIES, TRAINING_FAMILIES, Family, Goal
from workers.engine.target import Target

Rung = Literal["quick", "full"]
# The fallback aims this far above the goal's floor on the search rows, as a margin for unseen text.
FALLBACK_MARGINS = (0.0003, 0.001)
DEFAULT_FALLBACK_TARGET = 0.998
MAX_FALLBACK_TARGET = 0.9995
# Training for the quick rung and the full one (the full ones are the presets' recipes).
_DISTILL_FULL = {"augment": "splice", "augment_copies": 40, "epochs": 3, "lr": 5e-4}
_DISTILL_QUICK = {"augment": "splice", "augment_copies": 4, "epochs": 1, "lr": 5e-4}
_RECOVER_FULL = {"augment": "splice", "augment_copies": 16, "epochs": 2}
_RECOVER_QUICK = {"augment": "splice", "augment_copies": 2, "epochs": 1}
_QAT_FULL: dict[str, Any] = {}  # the quantize step's own defaults (benchmarks/results/engine_bench_qat3.md)
_QAT_QUICK = {"augment": "none", "epochs": 1}
_QAT_SCHEMES = ("int8_static", "int4")
_HUFFMAN = {"technique": "huffman", "params": {}}


@dataclass(frozen=True)
class CandidateSpec:
    family: Family
    choices: dict[str, Any]  # the trial's params, as Optuna sampled them
    recipe: dict[str, Any]
    rung: Rung | None = None  # training families only
    # The cheaper candidate whose fidelity this one cannot exceed (it adds loss on top of it) or, with
    # raises_bound, its untrained form, whose fidelity training raises at the same size and speed (QAT).
    bound: "CandidateSpec | None" = field(default=None, compare=False)
    raises_bound: bool = False

    @property
    def key(self) -> str:
        return f"{self.family}:{sorted(self.choices.items())}:{self.rung}"

    def describe(self) -> str:
        choices = ", ".join(f"{name} {value}" for name, value in self.choices.items())
        rung = f" ({self.rung} training)" if self.rung else ""
        return f"{self.family}{': ' + choices if choices else ''}{rung}"


def family_problem(family: Family, target: Target, task: str) -> str | None:
    """Why `family` cannot build a result of a `task` model for `target`, or None when it can."""
    if (family in LLM_FAMILIES) != (task == "text-generation"):
        return (f"it compresses causal language models, and this model's task is {task}" if family in LLM_FAMILIES
                else "causal language models take the llm_* families")
    if family in LLM_FAMILIES:
        return None if target.runtime == "torch" else (
            f"llm_quantize ships a compressed-tensors checkpoint for the target runtime torch, and the target is "
            f"{target.describe()}: set target {{runtime: torch, device: cpu or cuda}}"
        )
    if target.runtime == "onnxruntime":
        return None
    onnx_only = family in ("cluster", "prune_cluster", "int8_static", "qat")
    if onnx_only or (family == "low_rank_int8" and target.runtime == "torch"):
        return f"it builds an ONNX file, and the target is {target.describe()}"
    if target.runtime == "executorch" and family not in ("int8", "distill_int8", "low_rank_int8"):
        return "ExecuTorch takes dynamic int8 only"
    if family == "int4" and target.device != "cuda":
        return "torchao's int4 kernels run on cuda only"
    return None


def _fallback_target(goal: Goal, margin: float) -> float:
    if goal.min_fidelity is None:
        return DEFAULT_FALLBACK_TARGET
    return round(min(MAX_FALLBACK_TARGET, goal.min_fidelity + margin), 4)


def _step(technique: str, **params: Any) -> dict[str, Any]:
    return {"technique": technique, "params": params}


def _int8_step(goal: Goal, target: Target, variant: str, margin: float) -> dict[str, Any]:
    if target.runtime != "onnxruntime":
        return _step("quantize", scheme="int8_dynamic")
    if variant == "plain":
        return _step("quantize", scheme="int8_dynamic")
    if variant == "outliers_all":
        return _step("quantize", scheme="int8_dynamic", outlier_channels=8)
    fallback = {"target_fidelity": _fallback_target(goal, margin)}
    if variant == "fallback_outliers":
        return _step("quantize", scheme="int8_dynamic", fallback="outliers", **fallback)
    if variant == "smooth_fallback_outliers":
        return _step("quantize", scheme="int8_dynamic", fallback="outliers", smooth_alpha=0.5, **fallback)
    return _step("quantize", scheme="int8_dynamic", fallback="weight_only", **fallback)


INT8_VARIANTS = ("plain", "fallback_outliers", "smooth_fallback_outliers", "fallback_weight_only", "outliers_all")


_INT4_GROUPS = (32, 64, 128)
_INT4_ALGORITHMS = ("rtn", "hqq")
_STATIC_CALIBRATIONS = ("percentile", "entropy", "minmax")
_CLUSTER_BITS = (3, 4, 5, 6)
_EMBEDDING_DROPS = (0, 1, 2)
# llm_quantize's choices (the llm-* presets' points among them: w4a16 gptq g128, w8a8 gptq with SmoothQuant, fp8).
_LLM_W4_GROUPS = (32, 64, 128)
_LLM_W4_ALGORITHMS = ("rtn", "gptq", "awq")
_LLM_ALGORITHMS = ("rtn", "gptq")


def family_points(family: Family, target: Target) -> int:
    """How many distinct candidates a family can give (a training family: its quick rungs, each tried at most
    once before a full rung): what a search that tries everything measures at most."""
    onnx = target.runtime == "onnxruntime"
    if family == "half":
        return 1
    if family == "int8":
        # plain and outliers_all: with or without Huffman; the three fallbacks: also two margins each.
        return (2 + 3 * len(FALLBACK_MARGINS)) * 2 if onnx else 1
    if family == "int8_static":
        return len(_STATIC_CALIBRATIONS) * 2
    if family == "int4":
        return len(_INT4_GROUPS) * (len(_INT4_ALGORITHMS) if onnx else 1)
    if family == "cluster":
        return len(_CLUSTER_BITS) * len(_EMBEDDING_DROPS)
    if family == "llm_w4a16":
        return len(_LLM_W4_GROUPS) * len(_LLM_W4_ALGORITHMS)
    if family == "llm_w8a16":
        return len(_LLM_ALGORITHMS)
    if family == "llm_w8a8":
        return len(_LLM_ALGORITHMS) * 2
    return 1


def suggest(trial: optuna.Trial, family: Family, goal: Goal, target: Target) -> CandidateSpec:
    """The full-rung candidate of `family` with params sampled by `trial` (define-by-run: each family
    has its own params)."""
    onnx = target.runtime == "onnxruntime"
    if family == "half":
        scheme = "bf16" if target.runtime == "torch" and target.device == "cuda" else "fp16"
        return CandidateSpec(family, {}, {"steps": [_step("quantize", scheme=scheme)]})
    if family == "int8":
        variant = trial.suggest_categorical("int8_variant", INT8_VARIANTS) if onnx else "plain"
        falls_back = variant.startswith(("fallback", "smooth"))
        margin = trial.suggest_categorical("int8_margin", FALLBACK_MARGINS) if falls_back else 0.0
        huffman = trial.suggest_categorical("int8_huffman", (False, True)) if onnx else False
        steps = [_int8_step(goal, target, variant, margin), *([_HUFFMAN] if huffman else [])]
        choices = {"variant": variant, **({"margin": margin} if margin else {})}
        if huffman:
            choices["huffman"] = True
        return CandidateSpec(family, choices, {"steps": steps})
    if family == "int8_static":
        method = trial.suggest_categorical("static_calibration", _STATIC_CALIBRATIONS)
        smooth = trial.suggest_categorical("static_smooth", (False, True))
        params = {"scheme": "int8_static", "calibration_method": method, **({"smooth_alpha": 0.5} if smooth else {})}
        choices = {"calibration": method, "smooth": smooth}
        return CandidateSpec(family, choices, {"steps": [_step("quantize", **params)]})
    if family == "int4":
        group = trial.suggest_categorical("int4_group", _INT4_GROUPS)
        if not onnx:
            step = _step("quantize", scheme="int4_weight_only", group_size=group)
            return CandidateSpec(family, {"group": group}, {"steps": [step]})
        algorithm = trial.suggest_categorical("int4_algorithm", _INT4_ALGORITHMS)
        step = _step("quantize", scheme="int4_weight_only", group_size=group, algorithm=algorithm)
        return CandidateSpec(family, {"group": group, "algorithm": algorithm}, {"steps": [step]})
    if family == "cluster":
        bits, embedding_bits = _cluster_bits(trial, "cluster")
        return _cluster_spec(bits, embedding_bits)
    if family == "qat":
        return qat_spec(trial.suggest_categorical("qat_scheme", _QAT_SCHEMES), "full")
    if family == "prune_cluster":
        sparsity = trial.suggest_categorical("prune_sparsity", (0.25, 0.35, 0.45))
        bits, embedding_bits = _cluster_bits(trial, "prune")
        return prune_cluster_spec(sparsity, bits, embedding_bits, "full")
    if family == "distill_int8":
        depth = trial.suggest_categorical("distill_depth", (0.5, 0.67))
        return distill_spec(depth, target, "full")
    if family == "low_rank_int8":
        energy = trial.suggest_categorical("low_rank_energy", (0.95, 0.98))
        return low_rank_spec(energy, target, "full")
    if family in LLM_FAMILIES:
        return _llm_spec(trial, family)
    raise ValueError(f"unknown family {family!r}")


def _llm_spec(trial: optuna.Trial, family: Family) -> CandidateSpec:
    """One llm_quantize step; its calibration texts are the search rows, like every candidate's."""
    if family == "llm_w4a16":
        algorithm = trial.suggest_categorical("llm_w4_algorithm", _LLM_W4_ALGORITHMS)
        group = trial.suggest_categorical("llm_w4_group", _LLM_W4_GROUPS)
        choices: dict[str, Any] = {"algorithm": algorithm, "group": group}
        params: dict[str, Any] = {"scheme": "w4a16", "algorithm": algorithm, "group_size": group}
    elif family == "llm_w8a16":
        algorithm = trial.suggest_categorical("llm_w8a16_algorithm", _LLM_ALGORITHMS)
        choices, params = {"algorithm": algorithm}, {"scheme": "w8a16", "algorithm": algorithm}
    elif family == "llm_w8a8":
        algorithm = trial.suggest_categorical("llm_w8a8_algorithm", _LLM_ALGORITHMS)
        smooth = trial.suggest_categorical("llm_w8a8_smooth", (False, True))
        choices = {"algorithm": algorithm, "smooth": smooth}
        params = {"scheme": "w8a8", "algorithm": algorithm, "smoothing_strength": 0.8 if smooth else 0.0}
    elif family == "llm_fp8":
        choices, params = {}, {"scheme": "fp8"}
    else:
        choices, params = {}, {"scheme": "fp8", "sparsity": "2:4"}
    return CandidateSpec(family, choices, {"steps": [_step("llm_quantize", **params)]})


def _cluster_bits(trial: optuna.Trial, prefix: str) -> tuple[int, int]:
    bits = trial.suggest_categorical(f"{prefix}_bits", _CLUSTER_BITS)
    # The embedding table tolerates fewer values than the layers; a drop of 0 keeps them alike.
    drop = trial.suggest_categorical(f"{prefix}_embedding_drop", _EMBEDDING_DROPS)
    return bits, max(2, bits - drop)


def _cluster_spec(bits: int, embedding_bits: int) -> CandidateSpec:
    step = _step("cluster", bits=bits, **({"embedding_bits": embedding_bits} if embedding_bits != bits else {}))
    return CandidateSpec("cluster", {"bits": bits, "embedding_bits": embedding_bits}, {"steps": [step, _HUFFMAN]})


def _int8_plain(target: Target) -> CandidateSpec:
    step = _int8_step(Goal(objective="most_faithful"), target, "plain", 0.0)
    return CandidateSpec("int8", {"variant": "plain"}, {"steps": [step]})


def _post_training(scheme: str) -> CandidateSpec:
    """The QAT family's untrained forms: the int8_static and int4 families' default points."""
    if scheme == "int8_static":
        choices = {"calibration": "percentile", "smooth": False}
        step = _step("quantize", scheme="int8_static", calibration_method="percentile")
        return CandidateSpec("int8_static", choices, {"steps": [step]})
    step = _step("quantize", scheme="int4_weight_only", group_size=32, algorithm="rtn")
    return CandidateSpec("int4", {"group": 32, "algorithm": "rtn"}, {"steps": [step]})


def qat_spec(scheme: str, rung: Rung) -> CandidateSpec:
    untrained = _post_training(scheme)
    params = {**untrained.recipe["steps"][0]["params"], "qat": _QAT_FULL if rung == "full" else _QAT_QUICK}
    return CandidateSpec("qat", {"scheme": scheme}, {"steps": [_step("quantize", **params)]}, rung,
                         bound=untrained, raises_bound=True)


def prune_cluster_spec(sparsity: float, bits: int, embedding_bits: int, rung: Rung) -> CandidateSpec:
    recover = _RECOVER_FULL if rung == "full" else _RECOVER_QUICK
    prune = _step(
        "prune", structure="neurons", sparsity=sparsity, scope="per_layer", importance="gradient", recover=recover,
    )
    cluster = _cluster_spec(bits, embedding_bits)
    steps = [prune, *cluster.recipe["steps"]]
    choices = {"sparsity": sparsity, "bits": bits, "embedding_bits": embedding_bits}
    return CandidateSpec("prune_cluster", choices, {"steps": steps}, rung, bound=cluster)


def distill_spec(depth: float, target: Target, rung: Rung) -> CandidateSpec:
    training = _DISTILL_FULL if rung == "full" else _DISTILL_QUICK
    int8 = _int8_plain(target)
    steps = [_step("distill", student_depth=depth, **training), *int8.recipe["steps"]]
    return CandidateSpec("distill_int8", {"depth": depth}, {"steps": steps}, rung, bound=int8)


def low_rank_spec(energy: float, target: Target, rung: Rung) -> CandidateSpec:
    recover = _RECOVER_FULL if rung == "full" else _RECOVER_QUICK
    int8 = _int8_plain(target)
    steps = [_step("low_rank", energy=energy, recover=recover), *int8.recipe["steps"]]
    return CandidateSpec("low_rank_int8", {"energy": energy}, {"steps": steps}, rung, bound=int8)


def quick_rung(spec: CandidateSpec, target: Target) -> CandidateSpec:
    """The same candidate with a tenth of the training, tried before the full one."""
    choices = spec.choices
    if spec.family == "qat":
        return qat_spec(choices["scheme"], "quick")
    if spec.family == "prune_cluster":
        return prune_cluster_spec(choices["sparsity"], choices["bits"], choices["embedding_bits"], "quick")
    if spec.family == "distill_int8":
        return distill_spec(choices["depth"], target, "quick")
    if spec.family == "low_rank_int8":
        return low_rank_spec(choices["energy"], target, "quick")
    raise ValueError(f"{spec.family} does not train")


def is_training(family: Family) -> bool:
    return family in TRAINING_FAMILIES


# Causal LMs: round-to-nearest at 8 and then 4 bits (seconds each, and they bound what GPTQ must beat), then
# the llm-w4a16 and llm-fp8 presets' points (benchmarks/results/llm_bench.md).
_LLM_SEEDS: list[dict[str, Any]] = [
    {"family": "llm_w8a16", "llm_w8a16_algorithm": "rtn"},
    {"family": "llm_w4a16", "llm_w4_algorithm": "rtn", "llm_w4_group": 128},
    {"family": "llm_w4a16", "llm_w4_algorithm": "gptq", "llm_w4_group": 128},
    {"family": "llm_fp8"},
]


def seed_points(goal: Goal, families: list[Family], target: Target) -> list[dict[str, Any]]:
    """The cheap, usually strong points tried first, as Optuna params (study.enqueue_trial), before the
    sampler explores: they give every later comparison a baseline within minutes."""
    if all(family in LLM_FAMILIES for family in families):
        return [point for point in _LLM_SEEDS if point["family"] in families]
    onnx = target.runtime == "onnxruntime"
    points = [
        {"family": "half"},
        {"family": "int8", **({"int8_variant": "plain", "int8_huffman": False} if onnx else {})},
        {"family": "cluster", "cluster_bits": 5, "cluster_embedding_drop": 1},
        {"family": "int4", "int4_group": 32, **({"int4_algorithm": "rtn"} if onnx else {})},
    ]
    if onnx and (goal.min_fidelity or 0) >= 0.99:
        points.append({"family": "int8", "int8_variant": "smooth_fallback_outliers", "int8_margin": 0.0003,
                       "int8_huffman": False})
    if onnx and goal.objective in ("fastest", "least_energy"):
        # Static int8 with smoothing: 0.9959 held-out on MiniLM at 2.4x fp32's speed at batch 32, in a
        # half-minute job (benchmarks/results/engine_bench_static.md).
        points.append({"family": "int8_static", "static_calibration": "percentile", "static_smooth": True})
    return [point for point in points if point["family"] in families]
