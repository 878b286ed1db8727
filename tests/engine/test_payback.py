"""Payback arithmetic: exact figures for a saving, the noise band, a result that costs more, and days."""

import math
import subprocess
import sys

import pytest

from workers.engine.energy.payback import NOISE_FACTOR, PerThousand, compute_payback, resolve_deployment
from workers.engine.energy.schema import DeploymentReport
from workers.engine.energy.settings import EnergySettings

DEPLOYMENT = DeploymentReport(
    country="FRA", carbon_intensity_g_per_kwh=50.0, intensity_source="test", pue=1.5, requests_per_day=10_000
)
BEFORE = PerThousand(mean=2.0e-3, std=1.0e-4, runs=5)
AFTER = PerThousand(mean=1.0e-3, std=1.0e-4, runs=5)


def test_a_measurable_saving_gives_exact_break_even_figures():
    payback = compute_payback(0.5, 100.0, BEFORE, AFTER, DEPLOYMENT)
    assert payback.measurable and payback.verdict == "saves energy"
    assert payback.difference_kwh_per_1000 == pytest.approx(1.0e-3)
    assert payback.noise_band_kwh_per_1000 == pytest.approx(NOISE_FACTOR * math.sqrt(2 * 1.0e-8 / 5))
    # 1e-6 kWh saved per inference on the device, x 1.5 PUE where it serves.
    assert payback.saving_kwh_per_million == pytest.approx(1.5)
    assert payback.saving_co2e_g_per_million == pytest.approx(75.0)
    assert payback.break_even_inferences == pytest.approx(0.5 / 1.5e-6)
    assert payback.break_even_days == pytest.approx(0.5 / 1.5e-6 / 10_000)
    assert payback.carbon_break_even_inferences == pytest.approx(100.0 / 7.5e-5)
    assert payback.carbon_break_even_days == pytest.approx(100.0 / 7.5e-5 / 10_000)
    assert (payback.job_energy_kwh, payback.job_co2e_g) == (0.5, 100.0)
    assert "333,333 inferences" in payback.explanation and "33.3 days" in payback.explanation


def test_a_difference_within_the_noise_is_no_measurable_saving():
    noisy_after = PerThousand(mean=1.9e-3, std=1.0e-4, runs=5)  # 1e-4 apart, band ~1.26e-4
    payback = compute_payback(0.5, 100.0, BEFORE, noisy_after, DEPLOYMENT)
    assert not payback.measurable and payback.verdict == "no measurable saving"
    assert payback.noise_band_kwh_per_1000 > payback.difference_kwh_per_1000 > 0
    for field in ("saving_kwh_per_million", "saving_co2e_g_per_million", "break_even_inferences", "break_even_days"):
        assert getattr(payback, field) is None


def test_a_result_that_costs_more_never_breaks_even():
    payback = compute_payback(0.5, 100.0, AFTER, BEFORE, DEPLOYMENT)
    assert payback.measurable and payback.verdict == "costs more energy"
    assert payback.saving_kwh_per_million == pytest.approx(-1.5)
    assert payback.break_even_inferences is None and payback.break_even_days is None
    assert payback.carbon_break_even_inferences is None
    assert "never paid back" in payback.explanation


def test_days_need_a_request_rate():
    payback = compute_payback(0.5, 100.0, BEFORE, AFTER, DEPLOYMENT.model_copy(update={"requests_per_day": None}))
    assert payback.break_even_inferences == pytest.approx(0.5 / 1.5e-6)
    assert payback.break_even_days is None and payback.carbon_break_even_days is None


def test_no_inference_energy_or_a_single_run_is_not_a_saving():
    missing = compute_payback(None, None, None, AFTER, DEPLOYMENT)
    assert not missing.measurable and missing.verdict == "not measured"
    single = compute_payback(0.5, 100.0, PerThousand(2.0e-3, 0.0, 1), PerThousand(1.0e-3, 0.0, 1), DEPLOYMENT)
    assert not single.measurable and single.noise_band_kwh_per_1000 is None


def test_a_zero_carbon_grid_has_no_carbon_break_even_and_an_unknown_job_energy_none():
    clean = DEPLOYMENT.model_copy(update={"carbon_intensity_g_per_kwh": 0.0})
    payback = compute_payback(0.5, 100.0, BEFORE, AFTER, clean)
    assert payback.saving_co2e_g_per_million == 0.0 and payback.carbon_break_even_inferences is None
    unknown_job = compute_payback(None, None, BEFORE, AFTER, DEPLOYMENT)
    assert unknown_job.saving_kwh_per_million == pytest.approx(1.5) and unknown_job.break_even_inferences is None


def test_the_deployment_defaults_to_the_workers_grid_and_pue():
    same = resolve_deployment(EnergySettings(country="DEU", pue=1.3, requests_per_day=5))
    assert (same.country, same.pue, same.requests_per_day) == ("DEU", 1.3, 5)
    other = resolve_deployment(EnergySettings(country="DEU", pue=1.3, deployment_country="fra", deployment_pue=1.1))
    assert (other.country, other.pue) == ("FRA", 1.1)
    assert other.carbon_intensity_g_per_kwh < same.carbon_intensity_g_per_kwh
    world = resolve_deployment(EnergySettings())
    assert world.country is None and "world average" in world.intensity_source


def test_settings_modules_stay_free_of_torch_and_codecarbon():
    code = (
        "import sys; import workers.engine.energy.settings, workers.engine.evaluation.settings; "
        "print(sorted(m for m in ('torch', 'codecarbon') if m in sys.modules))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"
