"""Payback, pure arithmetic: energy and CO2 saved per million inferences where the model will serve,
and after how many inferences (and days) the job's own energy and CO2 are repaid.

A saving counts only when it stands out of the measured noise: the difference of the two means must
exceed NOISE_FACTOR standard errors of that difference, sqrt(sd_o^2/n_o + sd_r^2/n_r) (Welch). With 2
that is the usual ~95% band; with 5 runs a side the exact t quantile is ~2.3, so it is slightly lenient.
"""

import math
from dataclasses import dataclass

from workers.engine.energy.intensity import carbon_intensity
from workers.engine.energy.schema import (
    DeploymentReport,
    EnergyReport,
    InferenceEnergyReport,
    InferenceSide,
    PaybackReport,
)
from workers.engine.energy.settings import EnergySettings

NOISE_FACTOR = 2.0


@dataclass(frozen=True)
class PerThousand:
    """Device kWh per 1,000 inferences: mean and sample standard deviation over `runs` runs."""

    mean: float
    std: float
    runs: int

    @classmethod
    def of(cls, side: InferenceSide) -> "PerThousand":
        return cls(side.kwh_per_1000_mean, side.kwh_per_1000_std, len(side.runs))


def noise_band(before: PerThousand, after: PerThousand) -> float:
    """NOISE_FACTOR standard errors of the difference of the two means; inf with one run a side."""
    if before.runs < 2 or after.runs < 2:
        return math.inf  # one run says nothing about the spread
    return NOISE_FACTOR * math.sqrt(before.std**2 / before.runs + after.std**2 / after.runs)


def resolve_deployment(settings: EnergySettings) -> DeploymentReport:
    """The deployment's grid and PUE default to the worker's own."""
    country = settings.deployment_country or settings.country
    intensity, source = carbon_intensity(country)
    pue = settings.deployment_pue if settings.deployment_pue is not None else settings.pue
    return DeploymentReport(
        country=country,
        carbon_intensity_g_per_kwh=intensity,
        intensity_source=source,
        pue=pue,
        requests_per_day=settings.requests_per_day,
    )


def _ratio(numerator: float | None, denominator: float) -> float | None:
    return numerator / denominator if numerator is not None and denominator > 0 else None


def _days(inferences: float | None, requests_per_day: float | None) -> float | None:
    return inferences / requests_per_day if inferences is not None and requests_per_day else None


def compute_payback(
    job_energy_kwh: float | None,
    job_co2e_g: float | None,
    before: PerThousand | None,
    after: PerThousand | None,
    deployment: DeploymentReport,
    unit: str = "inferences",
) -> PaybackReport:
    """`unit`: what before and after count per 1,000 (inferences, or a causal LM's generated tokens)."""
    common = {"job_energy_kwh": job_energy_kwh, "job_co2e_g": job_co2e_g, "deployment": deployment}
    empty = dict.fromkeys(
        (
            "saving_kwh_per_million", "saving_co2e_g_per_million", "break_even_inferences", "break_even_days",
            "carbon_break_even_inferences", "carbon_break_even_days",
        )
    )
    if before is None or after is None:
        return PaybackReport(
            measurable=False, verdict="not measured", difference_kwh_per_1000=None, noise_band_kwh_per_1000=None,
            explanation="Inference energy was not measured, so no saving can be computed.", **empty, **common,
        )
    difference = before.mean - after.mean
    band = noise_band(before, after)
    measured = {"difference_kwh_per_1000": difference, "noise_band_kwh_per_1000": band if math.isfinite(band) else None}
    if abs(difference) <= band:
        why = f"within the noise band of ±{band:.3g}" if math.isfinite(band) else "but one run per model gives no noise estimate"
        return PaybackReport(
            measurable=False, verdict="no measurable saving", **measured, **empty, **common,
            explanation=(
                f"The result's energy per 1,000 {unit} differs from the original's by {difference:.3g} kWh, "
                f"{why}: no measurable saving."
            ),
        )

    # Facility energy where the model serves: device energy times the deployment's PUE.
    saving_per_inference_kwh = difference / 1000.0 * deployment.pue
    saving_co2e_per_inference_g = saving_per_inference_kwh * deployment.carbon_intensity_g_per_kwh
    savings = {
        "saving_kwh_per_million": saving_per_inference_kwh * 1e6,
        "saving_co2e_g_per_million": saving_co2e_per_inference_g * 1e6,
    }
    if difference < 0:
        return PaybackReport(
            measurable=True, verdict="costs more energy", **measured, **savings, **common,
            break_even_inferences=None, break_even_days=None, carbon_break_even_inferences=None,
            carbon_break_even_days=None,
            explanation=(
                f"The compressed model uses {-savings['saving_kwh_per_million']:.3g} kWh more per million "
                f"{unit} than the original: the job's energy is never paid back."
            ),
        )
    break_even = _ratio(job_energy_kwh, saving_per_inference_kwh)
    carbon_break_even = _ratio(job_co2e_g, saving_co2e_per_inference_g)
    days = _days(break_even, deployment.requests_per_day)
    explanation = f"Saves {savings['saving_kwh_per_million']:.3g} kWh per million {unit}"
    if break_even is not None:
        explanation += f"; the job's {job_energy_kwh:.3g} kWh is paid back after {break_even:,.0f} {unit}"
        if days is not None:
            explanation += f" ({days:.3g} days at {deployment.requests_per_day:,.0f} a day)"
    return PaybackReport(
        measurable=True, verdict="saves energy", **measured, **savings, **common,
        break_even_inferences=break_even,
        break_even_days=days,
        carbon_break_even_inferences=carbon_break_even,
        carbon_break_even_days=_days(carbon_break_even, deployment.requests_per_day),
        explanation=explanation + ".",
    )


def payback_section(energy: EnergyReport, inference: InferenceEnergyReport, settings: EnergySettings) -> PaybackReport:
    tracked = energy.method not in ("unavailable", "disabled")
    payback = compute_payback(
        energy.total.energy_kwh if tracked else None,
        energy.total.co2e_g if tracked else None,
        PerThousand.of(inference.original) if inference.original else None,
        PerThousand.of(inference.result) if inference.result else None,
        resolve_deployment(settings),
    )
    idle = energy.total.gpu_idle_kwh
    if not tracked or idle is None or energy.total.energy_kwh <= 0:
        return payback
    # The whole job counts (an idle GPU held for a job is the job's cost); the user is told how much of it was idle.
    share = idle / energy.total.energy_kwh
    return payback.model_copy(update={
        "job_gpu_idle_kwh": idle,
        "explanation": f"{payback.explanation} The job's energy includes {idle:.3g} kWh ({share:.0%}) drawn by its GPU "
        "while idle.",
    })
