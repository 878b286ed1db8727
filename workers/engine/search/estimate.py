"""Pre-flight: how long a goal's job and each candidate will take, and its peak memory, from the model's
size, the rows and the speed of one forward pass, before any compute. The API uses it to refuse a goal
whose budget cannot fit (with a guessed forward speed); the search uses it, with the measured speed and
each family's measured times, to start only the candidates that fit what is left of the budget.

Hand-written: no library estimates compression jobs. The constants were fitted on all-MiniLM-L6-v2 and
tiny models on a 2-core CPU (benchmarks/auto_bench.py measures the estimates against the real times).
"""

from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FixedTrial

from workers.engine.search.goal import Family, Goal
from workers.engine.search.space import (
    CandidateSpec, family_points, family_problem, is_training, quick_rung, suggest,
)
from workers.engine.target import Target

# One fp32 forward row at batch 32, per parameter, token and thread: all-MiniLM-L6-v2 took 759 ms for 32
# rows of 128 tokens on 2 threads (benchmarks/results/engine_bench.md).
SECONDS_PER_PARAM_TOKEN_THREAD = 0.759 / 32 * 2 / (22.7e6 * 128)
# Per parameter: loading, exporting to ONNX, packaging, and the work of each technique that does not
# depend on the rows (k-means runs its iterations per tensor whatever the bits).
_SECONDS_PER_PARAM = {"load": 1.0e-7, "export": 7.0e-8, "package": 2.0e-8, "quantize": 5.0e-8, "int4": 3.0e-8,
                      "cluster": 8.0e-7}
# Forward passes over the calibration rows that a step makes, in units of one pass over them.
# The fallback measures its fidelity once per layer it tries (dozens at a target of 0.998 or more on MiniLM:
# 100 to 140 s on 2 cores, benchmarks/results/auto_bench.md).
_ROW_PASSES = {"fallback": 50.0, "outliers": 1.0, "static": 2.0, "cluster": 2.0, "importance": 3.0,
               "layer_choice": 6.0}
# One training example against one forward row: the teacher's forward plus the student's forward and
# backward (about 3 forwards), the student at the depth it keeps.
_TEACHER_AND_STUDENT_PASSES = 1.0
_STUDENT_PASSES = 3.0
# A QAT step also rounds every weight (the embedding table included) to its grid, forward and back: its
# candidates took 2.0x (quick rung) and 2.4x (full) the plain training estimate on MiniLM
# (benchmarks/results/auto_bench_fastest_reuse.md).
_QAT_STEP_COST = 2.2
# Seconds that do not scale with the model: the engine process starting (torch, transformers and
# onnxruntime imports) and, per candidate, building and loading its runtime session.
_JOB_OVERHEAD_S = 10.0
_CANDIDATE_OVERHEAD_S = 0.5
# llm_quantize runs llm-compressor in its own interpreter: its start (torch, transformers and llmcompressor
# imports), then the calibration passes over the layers, one decoder layer at a time. A calibrated
# algorithm's pass costs more than a forward: GPTQ accumulates each layer's Hessian, AWQ grid-searches
# its scales on the layer's inputs, SparseGPT solves per layer as GPTQ does.
_LLM_SCRIPT_S = 15.0
# AWQ's factor: its candidates took 129 and 142 s against estimates of 75 and 79 s with a factor of 25 on the
# tiny LM (benchmarks/results/llm_auto_bench.md); the rest were within 1.5x.
_LLM_PASS_FORWARDS = {"rtn": 0.0, "gptq": 3.0, "awq": 55.0, "sparsegpt": 3.0}
_LLM_SOLVE_SECONDS_PER_PARAM = {"rtn": 1.0e-7, "gptq": 4.0e-7, "awq": 4.0e-7, "sparsegpt": 5.0e-7}
_LLM_CALIBRATION_SAMPLES = 128  # llm_quantize's default
# Resident memory: the interpreter with torch, transformers and onnxruntime, then copies of the weights
# (the original, the candidate, its ONNX export and the runtime's session); training adds gradients and
# optimiser state.
_BASE_RSS_MB = 700.0
_WEIGHT_COPIES = 8.0
_TRAINING_WEIGHT_COPIES = 12.0
# A causal LM is held in its uploaded dtype, one copy at a time (the search loads it per candidate, and
# llm_quantize drops it before llm-compressor runs), plus the transients of a batch of 32 rows' logits in the
# latency and energy runs (a vocabulary per token: 1 GB for Llama 3 at 128 tokens) and the reloaded result:
# llm_quantize jobs on random-initialised Llamas peaked at 1.41x (1.5B parameters) and 1.66x (156M) their bf16
# bytes above a 19M one's job (benchmarks/results/llm_memory.md); at 8B the logits weigh less.
_LLM_WEIGHT_COPIES = 1.6
# Representative params of each family, for estimates before any trial has sampled them.
_REPRESENTATIVE: dict[Family, dict[str, Any]] = {
    "half": {},
    "int8": {"int8_variant": "plain", "int8_huffman": False},
    "int8_static": {"static_calibration": "percentile", "static_smooth": False},
    "int4": {"int4_group": 32, "int4_algorithm": "rtn"},
    "cluster": {"cluster_bits": 5, "cluster_embedding_drop": 1},
    "qat": {"qat_scheme": "int4"},
    "prune_cluster": {"prune_sparsity": 0.35, "prune_bits": 5, "prune_embedding_drop": 1},
    "distill_int8": {"distill_depth": 0.5},
    "low_rank_int8": {"low_rank_energy": 0.95},
    "llm_w4a16": {"llm_w4_algorithm": "gptq", "llm_w4_group": 128},
    "llm_w8a16": {"llm_w8a16_algorithm": "gptq"},
    "llm_w8a8": {"llm_w8a8_algorithm": "gptq", "llm_w8a8_smooth": True},
    "llm_fp8": {},
    "llm_2of4_fp8": {},
}


def static_seconds_per_row(num_parameters: int, sequence_length: int, threads: int) -> float:
    """A guess at one forward row's seconds, for before anything has run on the worker."""
    return SECONDS_PER_PARAM_TOKEN_THREAD * num_parameters * sequence_length / max(1, threads)


@dataclass(frozen=True)
class Workload:
    num_parameters: int
    weight_bytes: int
    search_rows: int
    eval_rows: int
    seconds_per_row: float  # one fp32 forward row at batch 32 on this worker, measured or guessed
    # Real tokens per row over sequence_length: data rows are padded per batch only, so short texts cost
    # less than the padded rows of the latency runs. Measured in a job; a guess before it.
    row_fill: float = 0.35
    latency_batches: tuple[int, ...] = (1, 32)
    latency_runs: int = 23  # warm-up plus timed runs per batch size
    energy_inferences: int = 640  # the inference-energy probe's inferences per model
    # Causal LMs: padded rows' worth of the perplexity pass over the search rows (per candidate) and over
    # the evaluation texts and the builtin sample (per measured model); 0 for other models.
    search_perplexity_rows: float = 0.0
    perplexity_rows: float = 0.0

    def forward_seconds(self, rows: float) -> float:
        """Rows of the dataset, padded per batch."""
        return rows * self.seconds_per_row * self.row_fill

    def padded_seconds(self, rows: float) -> float:
        """Rows padded to sequence_length (latency and energy runs)."""
        return rows * self.seconds_per_row

    def latency_seconds(self, batches: tuple[int, ...], runs: int) -> float:
        # A batch of 1 costs far more per row than a batch of 32: count it as 4 rows.
        return sum(runs * self.padded_seconds(max(batch, 4)) for batch in batches)


def representative(family: Family, goal: Goal, target: Target) -> CandidateSpec:
    params = {"family": family, **_REPRESENTATIVE[family]}
    if target.runtime != "onnxruntime":
        params = {key: value for key, value in params.items() if not key.startswith(("int8_", "int4_algorithm"))}
    return suggest(FixedTrial(params), family, goal, target)


def _training_seconds(training: dict[str, Any], work: Workload, depth: float = 1.0) -> float:
    """The teacher's and the student's passes over the (augmented) rows, for every epoch."""
    copies = 0 if training.get("augment") == "none" else training.get("augment_copies", 2)
    copies, epochs = max(copies, 1), training.get("epochs") or 4
    passes = _TEACHER_AND_STUDENT_PASSES + _STUDENT_PASSES * depth
    return work.forward_seconds(work.search_rows * copies * epochs * passes)


def _step_seconds(step: dict[str, Any], work: Workload) -> float:
    technique, params = step["technique"], step["params"]
    parameters, rows = work.num_parameters, work.search_rows
    per_param = _SECONDS_PER_PARAM
    if technique == "huffman":
        return per_param["package"] * parameters
    if technique == "quantize":
        seconds = (per_param["export"] + per_param["quantize"]) * parameters
        if params.get("scheme") == "int4_weight_only":
            seconds += per_param["int4"] * parameters
        if params.get("target_fidelity") is not None:
            seconds += work.forward_seconds(_ROW_PASSES["fallback"] * rows)
        if params.get("outlier_channels") or params.get("fallback") == "outliers" or params.get("smooth_alpha"):
            seconds += work.forward_seconds(_ROW_PASSES["outliers"] * rows)
        if params.get("scheme") == "int8_static":
            seconds += work.forward_seconds(_ROW_PASSES["static"] * rows)
        if params.get("qat") is not None:
            seconds += _QAT_STEP_COST * _training_seconds(params["qat"], work) + per_param["export"] * parameters
        return seconds
    if technique == "cluster":
        return (per_param["export"] + per_param["cluster"]) * parameters \
            + work.forward_seconds(_ROW_PASSES["cluster"] * rows)
    if technique == "llm_quantize":
        return _llm_quantize_seconds(params, work)
    seconds = _training_seconds(params.get("recover") or params, work, params.get("student_depth") or 1.0)
    if technique == "prune":
        seconds += work.forward_seconds(_ROW_PASSES["importance"] * rows)
    if technique == "distill":
        seconds += work.forward_seconds(_ROW_PASSES["layer_choice"] * rows)
    return seconds


def _llm_quantize_seconds(params: dict[str, Any], work: Workload) -> float:
    """The interpreter's start, the model written and reloaded, and each calibration pass (SparseGPT's, then
    the quantizer's) over the calibration rows, plus each algorithm's solve per weight."""
    scheme = params["scheme"]
    algorithms = [params.get("algorithm") or ("rtn" if scheme == "fp8" else "gptq")]
    if params.get("sparsity", "none") != "none":
        algorithms.append("sparsegpt")
    calibration_rows = min(params.get("calibration_samples", _LLM_CALIBRATION_SAMPLES), work.search_rows)
    seconds = _LLM_SCRIPT_S + 3 * _SECONDS_PER_PARAM["load"] * work.num_parameters
    for algorithm in algorithms:
        seconds += _LLM_SOLVE_SECONDS_PER_PARAM[algorithm] * work.num_parameters
        seconds += work.forward_seconds((1 + _LLM_PASS_FORWARDS[algorithm]) * calibration_rows)
    if scheme == "w8a8" and params.get("smoothing_strength", 0.8 if algorithms[0] != "rtn" else 0.0):
        seconds += work.forward_seconds(calibration_rows)  # SmoothQuant's own pass
    return seconds


def candidate_seconds(spec: CandidateSpec, work: Workload, search_latency_batches: tuple[int, ...]) -> float:
    """Its steps, packaging, and its measurement on the search rows."""
    steps = sum(_step_seconds(step, work) for step in spec.recipe["steps"])
    package = _SECONDS_PER_PARAM["package"] * work.num_parameters
    measure = work.forward_seconds(work.search_rows) + work.latency_seconds(search_latency_batches, 12) \
        + work.padded_seconds(work.search_perplexity_rows)
    return _CANDIDATE_OVERHEAD_S + steps + package + measure


def cost_class(spec: CandidateSpec) -> str:
    """Candidates whose time scales alike: the family, its rung, and whether a fidelity fallback runs."""
    falls_back = any(step["params"].get("target_fidelity") for step in spec.recipe["steps"])
    return f"{spec.family}:{spec.rung}:{'fallback' if falls_back else 'direct'}"


def result_measurement_seconds(work: Workload) -> float:
    """One model's measurement on the evaluation rows: fidelity pass, latency and inference energy."""
    return work.forward_seconds(work.eval_rows) + work.latency_seconds(work.latency_batches, work.latency_runs) \
        + work.padded_seconds(work.energy_inferences + work.perplexity_rows)


def fixed_seconds(work: Workload) -> float:
    """Everything but the search: loading, the original's and the result's measurement on the evaluation
    rows, and the original's on the search rows."""
    load = _JOB_OVERHEAD_S + _SECONDS_PER_PARAM["load"] * work.num_parameters
    return load + 2 * result_measurement_seconds(work) + work.forward_seconds(work.search_rows) \
        + work.padded_seconds(work.search_perplexity_rows)


def peak_rss_mb(work: Workload, training: bool, causal_lm: bool = False) -> float:
    copies = _LLM_WEIGHT_COPIES if causal_lm else _TRAINING_WEIGHT_COPIES if training else _WEIGHT_COPIES
    return _BASE_RSS_MB + copies * work.weight_bytes / 1e6


@dataclass
class Preflight:
    fixed_seconds: float
    family_seconds: dict[str, float]  # a representative candidate of each family (a training one's quick rung)
    peak_rss_mb: float
    budget_seconds: float
    dropped: dict[str, str] = field(default_factory=dict)  # family -> why the search leaves it out
    family_sizes: dict[str, int] = field(default_factory=dict)  # family -> distinct points it can give
    problems: list[str] = field(default_factory=list)  # why the goal cannot fit at all

    def expected_seconds(self, max_candidates: int) -> float:
        """The job's likely length: its measurements, plus every point of the families kept (a training
        family's quick rung once), until the budget or max_candidates ends the search."""
        kept = [(seconds, self.family_sizes.get(family, 1)) for family, seconds in self.family_seconds.items()
                if family not in self.dropped]
        if not kept:
            return self.fixed_seconds
        points = sum(count for _, count in kept)
        everything = sum(seconds * count for seconds, count in kept) * min(1.0, max_candidates / points)
        return min(self.budget_seconds, self.fixed_seconds + everything)

    def as_dict(self, max_candidates: int) -> dict[str, Any]:
        return {
            "expected_seconds": round(self.expected_seconds(max_candidates), 1),
            "fixed_seconds": round(self.fixed_seconds, 1),
            "family_seconds": {name: round(value, 1) for name, value in self.family_seconds.items()},
            "peak_rss_mb": round(self.peak_rss_mb),
            "budget_seconds": round(self.budget_seconds, 1),
            "dropped": self.dropped,
        }


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} minutes" if seconds >= 120 else f"{seconds:.0f} seconds"


def preflight(
    goal: Goal, work: Workload, target: Target, search_latency_batches: tuple[int, ...], task: str,
    seconds_spent: float = 0.0, fixed_seconds_left: float | None = None, memory_mb: float | None = None,
) -> Preflight:
    """Drops the families that cannot build the target or cannot fit the budget, and says why; a goal with
    no family left gets `problems`. Before the job (the API), everything but the search is still ahead;
    inside it, `seconds_spent` are gone and `fixed_seconds_left` remain besides the search."""
    budget = goal.budget_minutes * 60
    fixed = fixed_seconds(work)
    ahead = fixed if fixed_seconds_left is None else seconds_spent + fixed_seconds_left
    family_seconds: dict[str, float] = {}
    family_sizes: dict[str, int] = {}
    dropped: dict[str, str] = {}
    for family in goal.allowed_families(task):
        problem = family_problem(family, target, task)
        if problem is not None:
            dropped[family] = problem
            continue
        spec = representative(family, goal, target)
        # A training family runs its quick rung first: that is what must fit to try it at all.
        first = quick_rung(spec, target) if is_training(family) else spec
        family_seconds[family] = candidate_seconds(first, work, search_latency_batches)
        family_sizes[family] = family_points(family, target)
        needed = ahead + candidate_seconds(first, work, search_latency_batches)
        if needed > budget:
            dropped[family] = (
                f"needs about {_duration(needed)} with the job's measurements on this worker; the budget is "
                f"{_duration(budget)}"
            )
    if memory_mb is not None:
        for family in family_seconds:
            needed_mb = peak_rss_mb(work, is_training(family), task == "text-generation")
            if family not in dropped and needed_mb > memory_mb:
                dropped[family] = f"needs about {needed_mb:,.0f} MB of memory; the worker has {memory_mb:,.0f} MB"
    problems = []
    kept = [family for family in family_seconds if family not in dropped]
    if not kept:
        reasons = "; ".join(f"{family}: {why}" for family, why in dropped.items())
        problems.append(f"no candidate family fits ({reasons})")
    training = any(is_training(family) for family in kept)
    return Preflight(
        fixed_seconds=fixed, family_seconds=family_seconds, peak_rss_mb=peak_rss_mb(work, training, task == "text-generation"),
        budget_seconds=budget, dropped=dropped, family_sizes=family_sizes, problems=problems,
    )
