"""Plans a goal's search inside a job, once the original is measured: the speed measured on this worker
turns the pre-flight into estimates for every family, and the budget left into a deadline."""

import time
from dataclasses import dataclass

from workers.engine.errors import EngineUserError
from workers.engine.memory import usable_memory_bytes
from workers.engine.evaluation.data import builtin_sample_rows
from workers.engine.evaluation.settings import EvalSettings
from workers.engine.report import LatencyReport
from workers.engine.search.estimate import (
    Preflight, Workload, preflight, result_measurement_seconds, static_seconds_per_row,
)
from workers.engine.search.rows import split_sizes
from workers.engine.search.goal import Family, Goal
from workers.engine.target import Target

# Timed runs per latency batch size during the search (the final measurement uses the job's settings).
SEARCH_LATENCY_RUNS = 10


@dataclass(frozen=True)
class PerplexityTokens:
    """Tokens a causal LM's perplexity passes score: the search rows' (every candidate and the original), and
    the evaluation texts' plus the builtin sample's (the original and the result)."""

    search: int
    evaluation: int


@dataclass(frozen=True)
class JobFigures:
    """What the job measured and settled before the search, which its estimates start from."""

    started: float  # time.perf_counter() when the job began
    num_parameters: int
    original_size_bytes: int
    evaluation_rows: int
    search_rows: int
    settings: EvalSettings  # the job's own evaluation settings
    original_latency: LatencyReport  # on the evaluation rows, with the job's settings
    row_fill: float  # real tokens per search row over sequence_length
    task: str
    perplexity_tokens: PerplexityTokens | None = None  # causal LMs


def perplexity_rows(tokens: int, sequence_length: int) -> float:
    """Padded rows' worth of a strided perplexity pass: windows overlap by half, so each token is read twice."""
    return 2 * tokens / sequence_length


def guessed_perplexity_tokens(settings: EvalSettings, search_rows: int, evaluation_rows: int,
                              row_fill: float) -> PerplexityTokens:
    """Before the job has tokenized anything: rows times the guessed real tokens per row, capped as the job caps."""
    def tokens(rows: int) -> int:
        return min(settings.perplexity_max_tokens, round(rows * row_fill * settings.sequence_length))

    return PerplexityTokens(tokens(search_rows), tokens(evaluation_rows) + tokens(builtin_sample_rows()))


@dataclass(frozen=True)
class SearchPlan:
    work: Workload
    preflight: Preflight
    families: list[Family]
    deadline: float  # time.perf_counter() by which the search must stop, to leave the result's measurement


def search_settings(settings: EvalSettings, goal: Goal) -> EvalSettings:
    batches = {goal.latency_batch_size}
    if goal.objective == "least_energy":
        batches.add(settings.energy_batch_size)
    return settings.model_copy(update={
        "latency_batch_sizes": sorted(batches), "latency_warmup": 2,
        "latency_repeats": min(settings.latency_repeats, SEARCH_LATENCY_RUNS),
    })


def measured_seconds_per_row(latency: LatencyReport) -> float:
    """One padded fp32 forward row, from the original's median at its largest timed batch."""
    stats = latency.batches()
    size = max(int(key.removeprefix("batch_")) for key in stats)
    return stats[f"batch_{size}"].p50_ms / 1000 / size


def job_workload(settings: EvalSettings, num_parameters: int, weight_bytes: int, search_rows: int,
                 evaluation_rows: int, seconds_per_row: float, row_fill: float | None = None,
                 perplexity: PerplexityTokens | None = None) -> Workload:
    rows = {} if perplexity is None else {
        "search_perplexity_rows": perplexity_rows(perplexity.search, settings.sequence_length),
        "perplexity_rows": perplexity_rows(perplexity.evaluation, settings.sequence_length),
    }
    return Workload(
        num_parameters=num_parameters, weight_bytes=weight_bytes, search_rows=search_rows,
        eval_rows=evaluation_rows, seconds_per_row=seconds_per_row,
        **({"row_fill": row_fill} if row_fill is not None else {}), **rows,
        latency_batches=tuple(sorted(set(settings.latency_batch_sizes))),
        latency_runs=settings.latency_warmup + settings.latency_repeats,
        energy_inferences=settings.energy_inferences_per_run * (settings.energy_repeats + 1),
    )


def plan_search(goal: Goal, figures: JobFigures, target: Target, search_latency_batches: tuple[int, ...]) -> SearchPlan:
    work = job_workload(
        figures.settings, figures.num_parameters, figures.original_size_bytes, figures.search_rows,
        figures.evaluation_rows, measured_seconds_per_row(figures.original_latency), figures.row_fill,
        figures.perplexity_tokens,
    )
    spent = time.perf_counter() - figures.started
    after = result_measurement_seconds(work)
    plan = preflight(goal, work, target, search_latency_batches, figures.task, seconds_spent=spent,
                     fixed_seconds_left=after, memory_mb=usable_memory_bytes() / 1e6)
    if plan.problems:
        raise EngineUserError(f"The goal cannot be searched on this worker: {'; '.join(plan.problems)}.")
    families = [family for family in plan.family_seconds if family not in plan.dropped]
    return SearchPlan(work, plan, families, figures.started + goal.budget_minutes * 60 - after)


def submit_preflight(goal: Goal, task: str, num_parameters: int, weight_bytes: int, total_rows: int,
                     settings: EvalSettings, target: Target, threads: int,
                     memory_mb: float | None = None) -> tuple[Preflight, dict]:
    """The estimate before any compute (the API's 422 or the job's `preflight`), with a forward speed guessed
    from the model's size and `threads`; raises EngineUserError when the rows cannot be split."""
    searched, evaluated = split_sizes(total_rows, settings.max_samples, goal.search_rows)
    speed = static_seconds_per_row(num_parameters, settings.sequence_length, threads)
    tokens = None
    if task == "text-generation":
        tokens = guessed_perplexity_tokens(settings, searched, evaluated, Workload.row_fill)
    work = job_workload(settings, num_parameters, weight_bytes, searched, evaluated, speed, perplexity=tokens)
    plan = preflight(goal, work, target, tuple(search_settings(settings, goal).latency_batch_sizes), task,
                     memory_mb=memory_mb)
    figures = {**plan.as_dict(goal.max_candidates), "search_rows": searched, "evaluation_rows": evaluated,
               "seconds_per_row_guess": speed, "threads_assumed": threads}
    return plan, figures
