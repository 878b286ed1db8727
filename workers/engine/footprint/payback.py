"""Payback in one unit (litres of water, grams of embodied CO2e): after how many inferences the
result's saving per inference repays what the job cost in that unit. Whether a saving is measurable
is decided by the caller from the measurement it derives from (energy runs for water, run times for
embodied impact), with the energy payback's noise band.
"""

from workers.engine.footprint.schema import UnitPayback


def unit_payback(
    unit: str,
    job_amount: float | None,
    saving_per_thousand: float | None,
    measurable: bool,
    not_measurable_because: str,
    requests_per_day: float | None,
) -> UnitPayback:
    empty = {"saving_per_million": None, "break_even_inferences": None, "break_even_days": None}
    if saving_per_thousand is None:
        return UnitPayback(
            unit=unit, measurable=False, verdict="not measured", job_amount=job_amount, **empty,
            explanation=f"No per-inference figure in {unit} was measured: {not_measurable_because}",
        )
    saving_per_million = saving_per_thousand * 1000.0
    if not measurable:
        return UnitPayback(
            unit=unit, measurable=False, verdict="no measurable saving", job_amount=job_amount,
            saving_per_million=saving_per_million, break_even_inferences=None, break_even_days=None,
            explanation=f"No measurable saving in {unit}: {not_measurable_because}",
        )
    if saving_per_million < 0:
        return UnitPayback(
            unit=unit, measurable=True, verdict="costs more", job_amount=job_amount,
            saving_per_million=saving_per_million, break_even_inferences=None, break_even_days=None,
            explanation=f"The compressed model costs {-saving_per_million:.3g} {unit} more per million inferences: "
            f"the job's {unit} is never paid back.",
        )
    break_even = job_amount / (saving_per_thousand / 1000.0) if job_amount is not None and saving_per_thousand > 0 else None
    days = break_even / requests_per_day if break_even is not None and requests_per_day else None
    explanation = f"Saves {saving_per_million:.3g} {unit} per million inferences"
    if break_even is not None:
        explanation += f"; the job's {job_amount:.3g} {unit} is paid back after {break_even:,.0f} inferences"
        if days is not None:
            explanation += f" ({days:.3g} days at {requests_per_day:,.0f} a day)"
    return UnitPayback(
        unit=unit, measurable=True, verdict="saves", job_amount=job_amount, saving_per_million=saving_per_million,
        break_even_inferences=break_even, break_even_days=days, explanation=explanation + ".",
    )
