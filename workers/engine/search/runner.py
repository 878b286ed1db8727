"""Runs a goal's search: Optuna samples candidates across the families (the cheap, usually strong ones
first), each is compressed from a fresh copy of the original, packaged for the target and measured on
the search rows; training candidates go through a quick rung and run in full only where that shows
they can win. It stops within the budget and returns the chosen candidate's package.
"""

import copy
import logging
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import optuna
import torch
from transformers import PreTrainedTokenizerBase

from workers.engine.architectures.tasks import Task
from workers.engine.devices import GpuMemoryPeak
from workers.engine.energy.meter import EnergyMeter
from workers.engine.errors import EngineUserError
from workers.engine.evaluation.evaluate import ModelEvaluation, PreparedInputs, evaluate_model
from workers.engine.evaluation.fidelity import item_fidelity, summarise_fidelity
from workers.engine.evaluation.perplexity import strided_perplexity
from workers.engine.evaluation.settings import EvalSettings
from workers.engine.evaluation.step_probe import StepProbe
from workers.engine.loading import load_model
from workers.engine.recipe import Recipe
from workers.engine.report import CheckpointsReport, StepReport
from workers.engine.reuse import ReuseCache
from workers.engine.search.estimate import Preflight, Workload, candidate_seconds, cost_class, representative
from workers.engine.search.front import (
    Measured, candidate_report, choice_reason, choose, constraint_values, mark_pareto, objective_score, shortfall,
    violations,
)
from workers.engine.search.goal import QUALITY_CONSTRAINTS, Family, Goal
from workers.engine.search.checkpoint import (
    KeptCandidate, SearchCheckpoints, SearchProgress, add_trial, trial_record,
)
from workers.engine.search.perplexity import SearchPerplexity
from workers.engine.search.report import SearchReport, SkippedReport
from workers.engine.search.space import CandidateSpec, is_training, quick_rung, seed_points, suggest
from workers.engine.shipping import Packaged, package_result, result_runner_for
from workers.engine.state import ModelState
from workers.engine.steps import StepEnvironment, apply_steps
from workers.engine.target import Target

logger = logging.getLogger(__name__)

# A quick rung within this much (relative) of the quality floor may still reach it with full training.
PROMISE_MARGIN = 0.02
# The most (relative) quality shortfall of a post-training quantization that its QAT candidate is tried
# for: on MiniLM, QAT raised 4-bit weights from 0.9716 to 0.9932 held-out (benchmarks/results/engine_bench_qat2.md).
QAT_REACH = 0.03
# Consecutive samples of points already measured or ruled out before the search counts as converged.
# They cost no compute, so the sampler gets many chances to find a new point while budget is left.
MAX_REPEATS = 50


@dataclass
class SearchSetup:
    goal: Goal
    task: Task
    target: Target
    device: Literal["cpu", "cuda"]
    # Left untouched: every candidate starts from a copy. None for a causal LM: each candidate loads it from
    # config_dir, and its llm_quantize step reads the upload's folder and drops it, so the search never holds
    # the original beside a candidate's result.
    original_model: torch.nn.Module | None
    config_dir: Path
    tokenizer: PreTrainedTokenizerBase
    environment: StepEnvironment  # its calibration texts are the search rows
    inputs: PreparedInputs  # the search rows
    settings: EvalSettings  # the search's own latency batches and repeats
    original: ModelEvaluation  # the original on the search rows
    original_size_bytes: int
    original_kwh_per_1000: float | None
    requests_per_day: float | None
    threads: int
    max_batch: int
    work: Workload
    preflight: Preflight
    deadline: float  # time.perf_counter() by which the search must be done
    evaluation_rows: int
    perplexity: SearchPerplexity | None = None  # causal LMs


@dataclass
class SearchOutcome:
    packaged: Packaged
    steps: list[StepReport]
    recipe: dict[str, Any]
    state_parameters: int
    report: SearchReport
    checkpoints: CheckpointsReport | None


@dataclass
class _Kept:
    packaged: Packaged
    steps: list[StepReport]
    state_parameters: int
    directory: Path


def _layer_share(model: torch.nn.Module) -> float:
    """The share of parameters outside the embeddings: what fewer or thinner layers can remove."""
    total = sum(parameter.numel() for parameter in model.parameters())
    embedding = sum(p.numel() for name, p in model.named_parameters() if "embed" in name)
    return (total - embedding) / max(total, 1)


class _Search:
    def __init__(self, setup: SearchSetup, meter: EnergyMeter, gpu_peak: GpuMemoryPeak,
                 on_progress: Callable[[str, float], None], checkpoints: SearchCheckpoints | None):
        self.setup = setup
        self.checkpoints = checkpoints
        self.goal = setup.goal
        self.meter = meter
        self.gpu_peak = gpu_peak
        self.on_progress = on_progress
        self.started = time.perf_counter()
        self.measured: list[Measured] = []
        self.by_key: dict[str, Measured] = {}
        self.failed: set[str] = set()  # keys of candidates that raised: not run again
        self.kept: dict[int, _Kept] = {}
        self.skipped: list[SkippedReport] = []
        self.skipped_for_budget = 0
        self.corrections: dict[str, float] = {}  # cost class -> measured / estimated time of its last candidate
        self.layer_share = 1.0 if setup.original_model is None else _layer_share(setup.original_model)
        self.probe = StepProbe(setup.task, setup.inputs.batches, setup.original.outputs, threads=setup.threads)
        self.reuse = ReuseCache(setup.environment.work_dir / "search" / "reuse")
        self.original_accuracy = setup.original.quality.accuracy if setup.original.quality else None
        self.trials: list[dict[str, Any]] = []
        self.seconds_before = 0.0  # earlier attempts' search time: it counts against the budget
        restored = checkpoints.restored if checkpoints is not None else None
        if restored is not None:
            self.restore(restored.progress, restored.kept)
        self.deadline = setup.deadline - self.seconds_before

    def restore(self, progress: SearchProgress, kept: KeptCandidate) -> None:
        """Goes on from an earlier attempt: its candidates count as measured (sampled again, they cost nothing)."""
        self.measured, self.failed, self.skipped = progress.measured, progress.failed, progress.skipped
        self.by_key = {measured.spec.key: measured for measured in self.measured}
        self.skipped_for_budget, self.corrections = progress.skipped_for_budget, progress.corrections
        self.trials, self.seconds_before = progress.trials, progress.seconds
        directory = self.setup.environment.work_dir / "search" / f"{kept.number:02d}"
        self.kept = {kept.number: _Kept(kept.packaged, kept.steps, kept.state_parameters, directory)}

    def progress(self) -> SearchProgress:
        return SearchProgress(
            measured=self.measured, failed=self.failed, skipped=self.skipped,
            skipped_for_budget=self.skipped_for_budget, corrections=self.corrections,
            seconds=self.seconds_before + time.perf_counter() - self.started, trials=self.trials,
            resumed_candidates=[] if self.checkpoints is None else self.checkpoints.report.resumed_steps,
        )

    def save_checkpoint(self) -> None:
        if self.checkpoints is None:
            return
        number = choose(self.goal, self.measured, self.setup.requests_per_day).number
        kept = self.kept[number]
        choice = KeptCandidate(number, kept.packaged, kept.steps, kept.state_parameters)
        self.checkpoints.save(self.progress(), choice, kept.directory)

    # -- time and energy --------------------------------------------------------------------------

    def estimate(self, spec: CandidateSpec) -> float:
        batches = tuple(self.setup.settings.latency_batch_sizes)
        return candidate_seconds(spec, self.setup.work, batches) * self.corrections.get(cost_class(spec), 1.0)

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def energy_spent(self) -> bool:
        return self.goal.budget_kwh is not None and self.meter.total_kwh() >= self.goal.budget_kwh

    def fits(self, spec: CandidateSpec) -> bool:
        needed = self.estimate(spec)
        if needed <= self.left():
            return True
        self.skipped_for_budget += 1
        self.skip(spec, f"needs about {needed:.0f} s; {max(self.left(), 0):.0f} s of the budget are left")
        return False

    def skip(self, spec: CandidateSpec, reason: str) -> None:
        if not any(item.description == spec.describe() and item.reason == reason for item in self.skipped):
            self.skipped.append(SkippedReport(description=spec.describe(), reason=reason))
        logger.info("search: skipped %s: %s", spec.describe(), reason)

    # -- one candidate ----------------------------------------------------------------------------

    def try_evaluate(self, spec: CandidateSpec) -> Measured | None:
        """Measures `spec` when it was measured before (for free) or fits the time left."""
        if spec.key in self.failed:
            return None
        return self.evaluate(spec) if spec.key in self.by_key or self.fits(spec) else None

    def evaluate(self, spec: CandidateSpec) -> Measured | None:
        """Measures `spec` (once: a point sampled again gets its first measurement), or None if it failed."""
        if spec.key in self.by_key or spec.key in self.failed:
            return self.by_key.get(spec.key)
        setup = self.setup
        number = len(self.measured) + 1
        directory = setup.environment.work_dir / "search" / f"{number:02d}"
        estimated = self.estimate(spec)
        started = time.perf_counter()
        stage = f"search.{number:02d}.{spec.family}"
        self.on_progress(stage, self.fraction())
        logger.info("search: candidate %d, %s (about %.0f s)", number, spec.describe(), estimated)
        try:
            with self.meter.stage(stage):
                recipe = Recipe.from_dict(spec.recipe)
                if setup.original_model is None:
                    model = load_model(setup.config_dir, setup.task, setup.device, stored_dtype=True)
                else:
                    model = copy.deepcopy(setup.original_model)
                state = ModelState(task=setup.task, config_dir=setup.config_dir, torch_model=model)
                state, steps = apply_steps(
                    recipe.steps, state, replace(setup.environment, work_dir=directory, first_step_reuse=self.reuse),
                    self.probe, self.gpu_peak,
                    lambda _stage: nullcontext(),
                )
                packaged = package_result(
                    state, setup.target, directory, setup.tokenizer, setup.max_batch, setup.environment.sequence_length
                )
                state_parameters = state.num_parameters() if packaged.format == "pte" else 0
                state = None
                runner = result_runner_for(packaged, setup.target, setup.task, setup.tokenizer, setup.threads)
                evaluation = evaluate_model(
                    runner, setup.task, setup.inputs, setup.settings, directory / "outputs", lambda *_: None,
                    setup.original.outputs,
                )
                perplexity = None
                if setup.perplexity is not None:
                    scored = strided_perplexity(runner, setup.perplexity.stream, setup.perplexity.window)
                    perplexity = scored.perplexity
                del runner
        except Exception as exc:  # noqa: BLE001 - one candidate failing must not end the search
            logger.warning("search: candidate %d (%s) failed: %s: %s", number, spec.describe(), type(exc).__name__, exc)
            self.skip(spec, f"failed: {type(exc).__name__}: {exc}")
            self.failed.add(spec.key)
            shutil.rmtree(directory, ignore_errors=True)
            return None
        wall = time.perf_counter() - started
        # Like candidates' next estimates follow what this one really took (within 4x either way).
        uncorrected = estimated / self.corrections.get(cost_class(spec), 1.0)
        self.corrections[cost_class(spec)] = min(4.0, max(0.25, wall / max(uncorrected, 1e-3)))
        fidelity = summarise_fidelity(
            setup.task, item_fidelity(setup.task, setup.original.outputs, evaluation.outputs), setup.inputs.num_samples
        )
        evaluation.outputs.remove()
        latency = evaluation.latency.batches()[f"batch_{self.goal.latency_batch_size}"].p50_ms
        accuracy = evaluation.quality.accuracy if evaluation.quality else None
        measured = Measured(
            number=number, spec=spec, size_bytes=packaged.size_bytes(),
            size_ratio=packaged.size_bytes() / setup.original_size_bytes,
            fidelity=fidelity.metrics[fidelity.primary_metric], fidelity_metric=fidelity.primary_metric,
            latency_ms=latency, accuracy=accuracy, accuracy_drop=self.accuracy_drop(accuracy),
            perplexity=perplexity, perplexity_increase=self.perplexity_increase(perplexity),
            kwh_per_1000=self.kwh_per_1000(evaluation), job_kwh=self.meter.stage_kwh(stage),
            wall_time_s=wall, estimated_s=estimated,
        )
        measured.violations = violations(self.goal, measured)
        self.measured.append(measured)
        self.by_key[spec.key] = measured
        self.kept[number] = _Kept(packaged, steps, state_parameters, directory)
        self.keep_only_the_choice()
        self.save_checkpoint()
        logger.info(
            "search: candidate %d: %.4fx (%d bytes), %s %.4f, %.2f ms at batch %d in %.0f s%s",
            number, measured.size_ratio, measured.size_bytes, measured.fidelity_metric, measured.fidelity,
            latency, self.goal.latency_batch_size, wall,
            "" if measured.feasible else "; breaks " + ", ".join(sorted(measured.violations)),
        )
        return measured

    def accuracy_drop(self, accuracy: float | None) -> float | None:
        if accuracy is None or self.original_accuracy is None:
            return None
        drop = self.original_accuracy - accuracy
        if self.goal.drop_is == "relative":
            drop = drop / self.original_accuracy if self.original_accuracy > 0 else 0.0
        return drop

    def perplexity_increase(self, perplexity: float | None) -> float | None:
        if perplexity is None or self.setup.perplexity is None:
            return None
        original = self.setup.perplexity.original
        return perplexity / original - 1 if self.goal.perplexity_increase_is == "relative" else perplexity - original

    def kwh_per_1000(self, evaluation: ModelEvaluation) -> float | None:
        if self.setup.original_kwh_per_1000 is None:
            return None
        batch = f"batch_{max(self.setup.settings.latency_batch_sizes)}"
        original = self.setup.original.latency.batches()[batch].p50_ms
        return self.setup.original_kwh_per_1000 * evaluation.latency.batches()[batch].p50_ms / original

    def keep_only_the_choice(self) -> None:
        """Only the current choice's package stays on disk; the others are measured and done with."""
        chosen = choose(self.goal, self.measured, self.setup.requests_per_day).number
        for number in [number for number in self.kept if number != chosen]:
            shutil.rmtree(self.kept.pop(number).directory, ignore_errors=True)

    def fraction(self) -> float:
        total = self.deadline - self.started
        return min(1.0, (time.perf_counter() - self.started) / total) if total > 0 else 1.0

    # -- training candidates ----------------------------------------------------------------------

    def quality_shortfall(self, measured: Measured) -> float:
        return max((measured.violations.get(key, 0.0) for key in QUALITY_CONSTRAINTS), default=0.0)

    def predicted(self, spec: CandidateSpec, bound: Measured) -> tuple[float, float]:
        """(size, latency) the full candidate should reach, from its cheaper part's measurement."""
        share = self.layer_share
        if spec.family == "prune_cluster":
            kept = 1 - spec.choices["sparsity"] * 2 / 3 * share  # the FFN holds about 2/3 of a layer
            return bound.size_bytes * kept, bound.latency_ms * (1 - spec.choices["sparsity"] * 0.6)
        if spec.family == "distill_int8":
            depth = spec.choices["depth"]
            return bound.size_bytes * (1 - share + share * depth), bound.latency_ms * depth
        return bound.size_bytes, bound.latency_ms

    def can_win(self, spec: CandidateSpec, bound: Measured) -> str | None:
        """Why `spec` cannot beat what the search has, or None when it may."""
        feasible = [m for m in self.measured if m.feasible]
        shortfall = self.quality_shortfall(bound)
        if spec.raises_bound:
            if not shortfall:
                return (f"its post-training form, candidate {bound.number}, already meets the quality floor at the "
                        "same size and speed")
            if shortfall > QAT_REACH:
                return (f"its post-training form, candidate {bound.number} ({bound.fidelity:.4f}), misses the quality "
                        f"floor by {shortfall:.1%}, more than quantization-aware training recovers ({QAT_REACH:.0%})")
        elif shortfall:
            return (f"it adds loss on top of candidate {bound.number} ({bound.spec.describe()}), which already "
                    f"misses the quality floor ({bound.fidelity:.4f})")
        if not feasible:
            return None
        if self.goal.objective == "most_faithful":
            return "training cannot make it more faithful than the candidates that already meet the goal"
        size, latency = self.predicted(spec, bound)
        best = choose(self.goal, self.measured, self.setup.requests_per_day)
        if self.goal.objective == "smallest" and size >= best.size_bytes:
            return f"predicted {size / 1e6:.2f} MB is no smaller than candidate {best.number}'s {best.size_bytes / 1e6:.2f} MB"
        if self.goal.objective in ("fastest", "least_energy") and latency >= best.latency_ms:
            return f"predicted {latency:.2f} ms is no faster than candidate {best.number}'s {best.latency_ms:.2f} ms"
        return None

    def train(self, spec: CandidateSpec) -> Measured | None:
        """The training candidate's own measurement (its full rung, else its quick one), or None when the
        search ruled it out first; its cheaper part, measured on the way, is a candidate of its own."""
        bound = self.try_evaluate(spec.bound) if spec.bound is not None else None
        if bound is None:
            return None
        why_not = self.can_win(spec, bound)
        if why_not is not None:
            self.skip(spec, why_not)
            return None
        first = self.try_evaluate(quick_rung(spec, self.setup.target))
        if first is None:
            return None
        if self.quality_shortfall(first) > PROMISE_MARGIN:
            self.skip(spec, f"its quick rung (candidate {first.number}) reached {first.fidelity:.4f}, too far "
                            "below the quality floor for full training to close the gap")
            return first
        return self.try_evaluate(spec) or first

    # -- the loop ---------------------------------------------------------------------------------

    def directions(self) -> list[str]:
        if self.goal.objective == "most_faithful":
            return ["maximize", "minimize"]
        return ["minimize", "maximize"]

    def values(self, measured: Measured) -> list[float]:
        if self.goal.objective == "most_faithful":
            return [measured.fidelity, float(measured.size_bytes)]
        return [objective_score(self.goal, measured, self.setup.requests_per_day), measured.fidelity]

    def run(self, families: list[Family]) -> str:
        seeds = seed_points(self.goal, families, self.setup.target)
        # Constraints reach the sampler through trial.set_constraint (constrained multi-objective TPE).
        sampler = optuna.samplers.TPESampler(seed=self.goal.seed, n_startup_trials=len(seeds) + 4)
        study = optuna.create_study(directions=self.directions(), sampler=sampler)
        for record in self.trials:  # an earlier attempt's, restored
            add_trial(study, record)
        for point in seeds[len(self.trials):]:
            study.enqueue_trial(point)
        repeats, budget_skips = 0, self.skipped_for_budget
        while True:
            if len(self.measured) >= self.goal.max_candidates:
                return f"max_candidates ({self.goal.max_candidates}) measured"
            if self.energy_spent():
                return f"the energy budget ({self.goal.budget_kwh} kWh) is spent"
            if self.left() <= 0:
                return "the time budget is spent"
            if repeats >= MAX_REPEATS:
                if self.skipped_for_budget > budget_skips:
                    return f"none of the last {repeats} points the sampler proposed was new and fit the time left"
                return (f"the sampler's last {repeats} proposals were all measured already or ruled out: the search "
                        "has converged")
            trial = study.ask()
            family = trial.suggest_categorical("family", families)
            spec = suggest(trial, family, self.goal, self.setup.target)
            count = len(self.measured)
            if is_training(family):
                measured = self.train(spec)
            else:
                measured = self.try_evaluate(spec)
            if len(self.measured) == count:
                repeats += 1
            else:
                repeats, budget_skips = 0, self.skipped_for_budget
            if measured is None:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                self.trials.append(trial_record(trial, None, None))
                if not self.measured and self.left() < min(
                        self.estimate(representative(family, self.goal, self.setup.target)) for family in families):
                    return "the time budget is too small for any candidate"
                continue
            constraints = constraint_values(self.goal, measured)
            for name, value in constraints.items():
                trial.set_constraint(name, value)
            study.tell(trial, self.values(measured))
            self.trials.append(trial_record(trial, self.values(measured), constraints))
            self.on_progress("search", self.fraction())


def run_search(setup: SearchSetup, families: list[Family], meter: EnergyMeter, gpu_peak: GpuMemoryPeak,
               on_progress: Callable[[str, float], None],
               checkpoints: SearchCheckpoints | None = None) -> SearchOutcome:
    """`checkpoints`: resume from an earlier attempt's search, and save after each candidate."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = _Search(setup, meter, gpu_peak, on_progress, checkpoints)
    stopped_because = search.run(families)
    if not search.measured:
        raise EngineUserError(
            f"The search measured no candidate ({stopped_because}); "
            + "; ".join(f"{item.description}: {item.reason}" for item in search.skipped)
        )
    goal = setup.goal
    chosen = choose(goal, search.measured, setup.requests_per_day)
    mark_pareto(search.measured)
    kept = search.kept[chosen.number]
    feasible = sum(1 for m in search.measured if m.feasible)
    stage_energy = [m.job_kwh for m in search.measured]
    report = SearchReport(
        goal=goal.model_dump(mode="json"),
        objective=goal.objective,
        search_rows=setup.inputs.num_samples,
        evaluation_rows=setup.evaluation_rows,
        original_perplexity=None if setup.perplexity is None else setup.perplexity.original,
        candidates=[candidate_report(m, chosen) for m in search.measured],
        skipped=search.skipped,
        families=list(families),
        dropped_families=setup.preflight.dropped,
        chosen=chosen.number,
        reason=choice_reason(goal, chosen, feasible),
        goal_met=chosen.feasible,
        shortfall=shortfall(goal, chosen, search.measured, setup.preflight.dropped, search.skipped_for_budget,
                            setup.inputs.num_samples),
        stopped_because=stopped_because,
        sampler=f"optuna {optuna.__version__} TPESampler (multi-objective, constrained), seed {goal.seed}",
        preflight=setup.preflight.as_dict(goal.max_candidates),
        seconds_per_row=setup.work.seconds_per_row,
        wall_time_s=search.seconds_before + time.perf_counter() - search.started,
        energy_kwh=None if any(value is None for value in stage_energy) else sum(stage_energy),
        reused=dict(search.reuse.hits),
    )
    logger.info("search done (%s): %d candidates; chose %d, %s", stopped_because, len(search.measured),
                chosen.number, report.reason)
    return SearchOutcome(kept.packaged, kept.steps, chosen.spec.recipe, kept.state_parameters, report,
                         None if checkpoints is None else checkpoints.report)
