"""What a candidate measured, how far it is from each constraint, the Pareto front, and the choice:
the best candidate that meets every constraint, or, when none does, the closest one, with the binding
constraint and what would meet it. A search never comes back empty-handed.
"""

from dataclasses import dataclass, field
from typing import Any

from workers.engine.recipe import Recipe
from workers.engine.search.goal import LLM_FAMILIES, Goal
from workers.engine.search.report import CandidateReport
from workers.engine.search.space import CandidateSpec


@dataclass
class Measured:
    """One evaluated candidate, on the search rows."""

    number: int
    spec: CandidateSpec
    size_bytes: int
    size_ratio: float
    fidelity: float
    fidelity_metric: str
    latency_ms: float  # median at the goal's latency batch size
    accuracy: float | None
    accuracy_drop: float | None  # as the goal means it (absolute or relative)
    kwh_per_1000: float | None  # estimated from latency against the measured original
    job_kwh: float | None  # the candidate's own compression and measurement, as the meter booked it
    wall_time_s: float
    estimated_s: float
    perplexity: float | None = None  # causal LMs, on the search rows
    perplexity_increase: float | None = None  # as the goal means it (relative, or perplexity points)
    violations: dict[str, float] = field(default_factory=dict)  # constraint -> how far past it, > 0
    pareto: bool = False

    @property
    def feasible(self) -> bool:
        return not self.violations


def constraint_values(goal: Goal, measured: Measured) -> dict[str, float]:
    """How far past each limit the goal sets the candidate is, relative to the limit (0.02 = 2% past it;
    <= 0 means met, as Optuna's constraints read it). An accuracy limit without a measured accuracy is absent."""
    values = {}
    if goal.min_fidelity is not None:
        values["min_fidelity"] = (goal.min_fidelity - measured.fidelity) / goal.min_fidelity
    if goal.max_accuracy_drop is not None and measured.accuracy_drop is not None:
        values["max_accuracy_drop"] = measured.accuracy_drop - goal.max_accuracy_drop
    if goal.max_perplexity_increase is not None and measured.perplexity_increase is not None:
        past = measured.perplexity_increase - goal.max_perplexity_increase
        if goal.perplexity_increase_is == "absolute":  # points: as a fraction of the original's, like "relative"
            past /= measured.perplexity - measured.perplexity_increase
        values["max_perplexity_increase"] = past
    if goal.max_size_ratio is not None:
        values["max_size_ratio"] = measured.size_ratio / goal.max_size_ratio - 1
    if goal.max_size_bytes is not None:
        values["max_size_bytes"] = measured.size_bytes / goal.max_size_bytes - 1
    if goal.max_latency_ms is not None:
        values["max_latency_ms"] = measured.latency_ms / goal.max_latency_ms - 1
    return values


def violations(goal: Goal, measured: Measured) -> dict[str, float]:
    """Each constraint the candidate breaks, with its shortfall relative to the limit."""
    return {name: value for name, value in constraint_values(goal, measured).items() if value > 0}


def objective_score(goal: Goal, measured: Measured, requests_per_day: float | None) -> float:
    """Lower is better. least_energy with a request rate weighs the candidate's own energy against a year
    of serving (the payback); without one, the energy per inference alone."""
    if goal.objective == "smallest":
        return float(measured.size_bytes)
    if goal.objective == "fastest":
        return measured.latency_ms
    if goal.objective == "most_faithful":
        return -measured.fidelity
    per_inference = (measured.kwh_per_1000 if measured.kwh_per_1000 is not None else measured.latency_ms) / 1000
    if requests_per_day is None or measured.kwh_per_1000 is None:
        return per_inference
    return (measured.job_kwh or 0.0) + per_inference * requests_per_day * 365


def mark_pareto(candidates: list[Measured]) -> None:
    """Flags the candidates no other one beats on size, fidelity and latency together (infeasible ones
    included: the front shows what each trade costs). Hand-written because Optuna's best_trials leaves
    infeasible and pruned trials out, and the front here spans three report axes, not the study's two."""
    def dominates(a: Measured, b: Measured) -> bool:
        no_worse = a.size_bytes <= b.size_bytes and a.fidelity >= b.fidelity and a.latency_ms <= b.latency_ms
        better = a.size_bytes < b.size_bytes or a.fidelity > b.fidelity or a.latency_ms < b.latency_ms
        return no_worse and better

    for candidate in candidates:
        candidate.pareto = not any(dominates(other, candidate) for other in candidates if other is not candidate)


def choose(goal: Goal, candidates: list[Measured], requests_per_day: float | None) -> Measured:
    feasible = [candidate for candidate in candidates if candidate.feasible]
    if feasible:
        return min(feasible, key=lambda c: (objective_score(goal, c, requests_per_day), -c.fidelity))
    # The least total shortfall across the broken constraints, then the objective, then fidelity (as above:
    # among equally small 4-bit checkpoints, the most faithful).
    return min(candidates, key=lambda c: (sum(c.violations.values()), objective_score(goal, c, requests_per_day),
                                          -c.fidelity))


_LIMITS = {
    "min_fidelity": ("fidelity", "at least {:.4g}"),
    "max_accuracy_drop": ("accuracy drop", "at most {:.4g}"),
    "max_perplexity_increase": ("perplexity increase", "at most {:.4g}"),
    "max_size_ratio": ("size ratio", "at most {:.4g}x"),
    "max_size_bytes": ("size", "at most {:.0f} bytes"),
    "max_latency_ms": ("latency", "at most {:.4g} ms"),
}


def _achieved(constraint: str, candidate: Measured) -> str:
    return {
        "min_fidelity": f"{candidate.fidelity:.4f}",
        "max_accuracy_drop": f"{candidate.accuracy_drop}",
        "max_perplexity_increase": f"{candidate.perplexity_increase:.4g}" if candidate.perplexity_increase is not None
        else "unmeasured",
        "max_size_ratio": f"{candidate.size_ratio:.4f}x",
        "max_size_bytes": f"{candidate.size_bytes} bytes",
        "max_latency_ms": f"{candidate.latency_ms:.2f} ms",
    }[constraint]


def shortfall(goal: Goal, chosen: Measured, candidates: list[Measured], dropped: dict[str, str],
              skipped_for_budget: int, search_rows: int) -> dict[str, Any] | None:
    """When no candidate met the goal: the binding constraint, by how much, and what would meet it."""
    if chosen.feasible:
        return None
    binding = max(chosen.violations, key=chosen.violations.get)
    name, limit = _LIMITS[binding]
    limit_value = getattr(goal, binding)
    advice = []
    others = {key for key in chosen.violations if key != binding}
    meeting_binding = [c for c in candidates if binding not in c.violations]
    if meeting_binding:
        best = min(meeting_binding, key=lambda c: sum(c.violations.values()))
        advice.append(
            f"candidate {best.number} ({best.spec.describe()}) meets {binding} but breaks "
            + ", ".join(f"{key} ({_achieved(key, best)})" for key in best.violations)
        )
    if dropped or skipped_for_budget:
        left_out = ", ".join(sorted(dropped)) or "none"
        advice.append(
            f"a bigger budget or a GPU worker: {skipped_for_budget} candidates were not tried for lack of time, "
            f"and these families were left out: {left_out}"
        )
    if binding in ("min_fidelity", "max_accuracy_drop") and search_rows < 1000 and candidates[0].spec.family \
            not in LLM_FAMILIES:
        advice.append(f"more data: training candidates recover more with more than {search_rows} search rows")
    if others:
        advice.append("loosen " + " or ".join(sorted({binding, *others})))
    else:
        advice.append(f"loosen {binding}")
    return {
        "binding_constraint": binding,
        "limit": limit.format(limit_value),
        "achieved": _achieved(binding, chosen),
        "shortfall_relative": round(chosen.violations[binding], 6),
        "message": f"No candidate met every constraint. The closest, candidate {chosen.number} "
        f"({chosen.spec.describe()}), has {name} {_achieved(binding, chosen)} where the goal asks "
        f"{limit.format(limit_value)}.",
        "would_need": advice,
    }


def choice_reason(goal: Goal, chosen: Measured, feasible: int) -> str:
    if not chosen.feasible:
        return "no candidate met every constraint: this one comes closest (the least total shortfall)"
    what = {"smallest": "the smallest", "fastest": "the fastest", "most_faithful": "the most faithful",
            "least_energy": "the least energy"}[goal.objective]
    return f"{what} of the {feasible} candidates that met every constraint on the search rows"


def candidate_report(measured: Measured, chosen: Measured) -> CandidateReport:
    return CandidateReport(
        number=measured.number, family=measured.spec.family, rung=measured.spec.rung,
        description=measured.spec.describe(), recipe=Recipe.from_dict(measured.spec.recipe).to_dict(),
        size_bytes=measured.size_bytes, size_ratio=measured.size_ratio, fidelity=measured.fidelity,
        fidelity_metric=measured.fidelity_metric, latency_ms=measured.latency_ms, accuracy=measured.accuracy,
        accuracy_drop=measured.accuracy_drop, perplexity=measured.perplexity,
        perplexity_increase=measured.perplexity_increase, kwh_per_1000=measured.kwh_per_1000,
        energy_kwh=measured.job_kwh,
        wall_time_s=measured.wall_time_s, estimated_s=measured.estimated_s, feasible=measured.feasible,
        violations=measured.violations, pareto=measured.pareto, chosen=measured is chosen,
    )
