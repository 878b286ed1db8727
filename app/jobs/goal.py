"""Rules for goal jobs at submit time: the goal must fit the model, its dataset and its budget, judged
before any compute by the engine's own pre-flight estimate (with a guessed forward speed)."""

import os

from app.core.errors import Invalid
from app.datasets.orm import Dataset
from app.models.orm import Model
from workers.engine.errors import EngineUserError
from workers.engine.evaluation.data import builtin_sample_rows
from workers.engine.evaluation.settings import EvalSettings
from workers.engine.memory import usable_memory_bytes
from workers.engine.search.goal import Goal, goal_task_problem
from workers.engine.search.plan import submit_preflight
from workers.engine.target import Target


def _invalid(field: str, msg: str) -> Invalid:
    return Invalid(f"goal: {msg}.", errors=[{"loc": ["body", "goal", field], "msg": msg}])


def worker_threads() -> int:
    """The CPUs a worker uses, taken as this host's (as its memory is): right for the embedded service, a
    guess when scaled out (the engine re-estimates with the speed it measures and its own memory)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_goal(goal: Goal, model: Model, dataset: Dataset | None, evaluation: EvalSettings, target: Target,
               soft_limit_seconds: float) -> dict:
    """The pre-flight estimate of a goal job, or a 422 that says which part cannot fit."""
    if goal.budget_minutes * 60 > soft_limit_seconds:
        raise _invalid("budget_minutes", f"a budget of {goal.budget_minutes:g} minutes outlasts the job's soft time "
                                         f"limit of {soft_limit_seconds / 60:g} minutes, which would stop the search: "
                                         "lower the budget or raise time_limits.soft_seconds")
    problem = goal_task_problem(goal, model.task)
    if problem is not None:
        raise _invalid(*problem)
    if goal.max_accuracy_drop is not None and (dataset is None or "label" not in dataset.columns):
        raise _invalid("max_accuracy_drop", "accuracy needs a dataset with a label column: give dataset_id")
    total = dataset.num_rows if dataset is not None else builtin_sample_rows()
    try:
        plan, figures = submit_preflight(
            goal, model.task, model.num_parameters, model.size_bytes, total, evaluation, target, worker_threads(),
            usable_memory_bytes() / 1e6,
        )
    except EngineUserError as exc:
        raise _invalid("search_rows", str(exc)) from exc
    if plan.problems:
        raise _invalid("budget_minutes", "; ".join(plan.problems))
    return figures
