"""The sustainability summary: what compression jobs cost in energy, and what their models save."""

from datetime import datetime

from sqlalchemy.orm import Session

from app.db.base import as_utc
from app.energy import repository as energy_repository
from app.energy.repository import JobFootprint
from app.jobs import repository as jobs_repository
from app.jobs.orm import JOB_STATUSES
from app.jobs.report_figures import report_figures
from app.reports import repository as tenant_totals
from app.reports.schemas import EnergyTotals, JobPayback, ProjectedSavings, Summary

DAYS_PER_YEAR = 365


def _job_payback(job, used: JobFootprint | None) -> JobPayback:  # noqa: ANN001
    report = job.report or {}
    payback = report.get("payback") or {}
    deployment = payback.get("deployment") or {}
    water = (report.get("water") or {}).get("payback") or {}
    embodied = (report.get("embodied") or {}).get("payback") or {}
    return JobPayback(
        id=job.id,
        name=job.name,
        status=job.status,
        created_at=job.created_at,
        energy_kwh=used.energy_kwh if used else None,
        co2e_g=used.co2e_g if used else None,
        measurable=payback.get("measurable"),
        verdict=payback.get("verdict"),
        saving_kwh_per_million=payback.get("saving_kwh_per_million"),
        saving_co2e_g_per_million=payback.get("saving_co2e_g_per_million"),
        break_even_inferences=payback.get("break_even_inferences"),
        break_even_days=payback.get("break_even_days"),
        requests_per_day=deployment.get("requests_per_day"),
        water_l=used.water_l if used else None,
        embodied_gco2e=used.embodied_gco2e if used else None,
        water_verdict=water.get("verdict"),
        water_saving_l_per_million=water.get("saving_per_million"),
        water_break_even_inferences=water.get("break_even_inferences"),
        embodied_verdict=embodied.get("verdict"),
        embodied_saving_gco2e_per_million=embodied.get("saving_per_million"),
        embodied_break_even_inferences=embodied.get("break_even_inferences"),
    )


def totals(session: Session, tenant_id: str, since: datetime | None, until: datetime | None) -> tuple[
    EnergyTotals, ProjectedSavings
]:
    """What the tenant's jobs of the window used, and what their models save a day: SQL sums only, so
    the cost does not grow with the reports stored."""
    savings = jobs_repository.savings_totals(session, tenant_id, since, until)
    return (
        EnergyTotals(**energy_repository.totals(session, tenant_id, since, until)),
        ProjectedSavings(
            **savings,
            kwh_per_year=savings["kwh_per_day"] * DAYS_PER_YEAR,
            co2e_kg_per_year=savings["co2e_g_per_day"] * DAYS_PER_YEAR / 1000,
            water_l_per_year=savings["water_l_per_day"] * DAYS_PER_YEAR,
        ),
    )


def _total(section: dict | None, field: str) -> float:
    """A section's total figure, or 0 when the section carries none (tracking off or failed)."""
    if not section or section.get("method") in ("unavailable", "disabled"):
        return 0.0
    return float((section.get("total") or {}).get(field) or 0.0)


def record_success(session: Session, tenant_id: str, report: dict) -> None:
    """Adds a job that just succeeded to its tenant's running totals (in the transaction storing it)."""
    figures = report_figures(report)
    original, result = figures["original_size_bytes"], figures["result_size_bytes"]
    tenant_totals.add(session, tenant_id, {
        "jobs_succeeded": 1,
        "bytes_saved": max(0, original - result) if original is not None and result is not None else 0,
        "energy_kwh": _total(report.get("energy"), "energy_kwh"),
        "co2e_g": _total(report.get("energy"), "co2e_g"),
        "water_l": _total(report.get("water"), "water_l"),
        "embodied_gco2e": _total(report.get("embodied"), "gwp_g"),
        "saving_kwh_per_day": figures["saving_kwh_per_day"] or 0.0,
        "saving_water_l_per_day": figures["saving_water_l_per_day"] or 0.0,
    })


def summary(session: Session, tenant_id: str, since: datetime | None, until: datetime | None) -> Summary:
    """For one tenant's jobs."""
    since, until = as_utc(since), as_utc(until)
    jobs = jobs_repository.created_between(session, tenant_id, since, until)
    used = energy_repository.per_job(session, [job.id for job in jobs])
    rows = [_job_payback(job, used.get(job.id)) for job in jobs]
    by_status = dict.fromkeys(JOB_STATUSES, 0)
    for job in jobs:
        by_status[job.status] += 1
    energy, projected = totals(session, tenant_id, since, until)
    return Summary(
        since=since, until=until, jobs_by_status=by_status, energy=energy, projected_savings=projected, jobs=rows,
    )
