"""Factories for database rows, for tests that set up state without running jobs."""

from pathlib import Path

from app.db.session import session_scope
from app.energy.orm import EnergyRecord
from app.jobs.orm import Job
from app.jobs.report_figures import report_figures
from app.models.orm import Model
from app.reports.service import record_success
from app.tenants.orm import DEFAULT_TENANT_ID


def add_model_row(**values) -> str:
    defaults = dict(
        name="m", architecture="BertModel", model_type="bert", task="feature-extraction",
        num_parameters=1, size_bytes=1, sha256="0" * 64, storage_key="models/none", tenant_id=DEFAULT_TENANT_ID,
    )
    with session_scope() as session:
        model = Model(**{**defaults, **values})
        session.add(model)
        session.flush()
        return model.id


def add_job_row(model_id: str, **values) -> str:
    defaults = dict(
        model_id=model_id, device="cpu", queue="cpu", recipe={"steps": []}, evaluation={}, deployment={},
        status="queued", progress=0.0, attempts=0, cancel_requested=False, tenant_id=DEFAULT_TENANT_ID,
    )
    if values.get("report"):  # as the worker stores them with the report
        defaults |= report_figures(values["report"])
    with session_scope() as session:
        job = Job(**{**defaults, **values})
        session.add(job)
        session.flush()
        if job.status == "succeeded" and job.report:  # as the worker counts it in its tenant's totals
            record_success(session, job.tenant_id, job.report)
        return job.id


def add_energy_row(job_id: str, stage: str, cpu_kwh: float, ram_kwh: float, co2e_g: float, **values) -> None:
    with session_scope() as session:
        session.add(
            EnergyRecord(
                job_id=job_id, stage=stage, duration_s=1.0, cpu_kwh=cpu_kwh, gpu_kwh=0.0, ram_kwh=ram_kwh,
                energy_kwh=cpu_kwh + ram_kwh, co2e_g=co2e_g, method=values.get("method", "estimated"),
                water_onsite_l=values.get("water_onsite_l"), water_offsite_l=values.get("water_offsite_l"),
                embodied_gco2e=values.get("embodied_gco2e"),
            )
        )


def add_checkpoint(job_id: str, step: int = 1) -> Path:
    """A stored checkpoint of the job (its row and a file under checkpoints/) in the configured storage."""
    from app.checkpoints.orm import JobCheckpoint
    from app.config import get_settings
    from app.core.storage import storage_for

    key = f"checkpoints/{job_id}/{'0' * 64}/step-{step:02d}.tar"
    path = storage_for(get_settings()).local_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"checkpoint")
    with session_scope() as session:
        session.add(JobCheckpoint(job_id=job_id, key="0" * 64, step=step, attempt=1, storage_key=key,
                                  size_bytes=10, sha256="0" * 64))
    return path


def checkpoint_rows(job_id: str) -> int:
    from sqlalchemy import func, select

    from app.checkpoints.orm import JobCheckpoint

    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(JobCheckpoint).where(JobCheckpoint.job_id == job_id))
