"""Every query on the energy records table."""

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.energy.orm import EnergyRecord
from app.jobs.orm import Job
from app.jobs.repository import created_in


def for_job(session: Session, job_id: str) -> list[EnergyRecord]:
    return list(session.scalars(select(EnergyRecord).where(EnergyRecord.job_id == job_id).order_by(EnergyRecord.created_at)))


def add_all(session: Session, records: list[EnergyRecord]) -> None:
    session.add_all(records)
    session.flush()


def totals(
    session: Session, tenant_id: str, since: datetime | None = None, until: datetime | None = None
) -> dict[str, float]:
    """Energy, CO2, water and embodied impact summed over the tenant's jobs created in the window."""
    query = select(
        func.coalesce(func.sum(EnergyRecord.cpu_kwh), 0.0),
        func.coalesce(func.sum(EnergyRecord.gpu_kwh), 0.0),
        func.coalesce(func.sum(EnergyRecord.ram_kwh), 0.0),
        func.coalesce(func.sum(EnergyRecord.energy_kwh), 0.0),
        func.coalesce(func.sum(EnergyRecord.co2e_g), 0.0),
        func.coalesce(func.sum(EnergyRecord.water_onsite_l), 0.0),
        func.coalesce(func.sum(EnergyRecord.water_offsite_l), 0.0),
        func.coalesce(func.sum(EnergyRecord.embodied_gco2e), 0.0),
    ).join(Job, Job.id == EnergyRecord.job_id).where(Job.tenant_id == tenant_id)
    cpu, gpu, ram, energy, co2, onsite, offsite, embodied = session.execute(created_in(query, since, until)).one()
    return {
        "cpu_kwh": cpu, "gpu_kwh": gpu, "ram_kwh": ram, "energy_kwh": energy, "co2e_g": co2,
        "water_onsite_l": onsite, "water_offsite_l": offsite, "water_l": onsite + offsite, "embodied_gco2e": embodied,
    }


class JobFootprint(NamedTuple):
    energy_kwh: float
    co2e_g: float
    water_l: float | None
    embodied_gco2e: float | None


def per_job(session: Session, job_ids: list[str]) -> dict[str, JobFootprint]:
    """What each job that has energy records used; water and embodied are None for older records."""
    query = (
        select(
            EnergyRecord.job_id,
            func.sum(EnergyRecord.energy_kwh),
            func.sum(EnergyRecord.co2e_g),
            func.sum(EnergyRecord.water_onsite_l + EnergyRecord.water_offsite_l),
            func.sum(EnergyRecord.embodied_gco2e),
        )
        .where(EnergyRecord.job_id.in_(job_ids))
        .group_by(EnergyRecord.job_id)
    )
    return {job_id: JobFootprint(*figures) for job_id, *figures in session.execute(query)}
