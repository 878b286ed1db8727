"""Every query on the jobs table, including the atomic state transitions workers rely on."""

from datetime import datetime

from sqlalchemy import Text, cast, func, select, update
from sqlalchemy.orm import Session, joinedload

from app.core.pagination import PageRequest, paginate
from app.jobs.orm import QUEUED, RUNNING, SUCCEEDED, Job


def get(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def get_owned(session: Session, tenant_id: str, job_id: str) -> Job | None:
    """With its artifacts in the same query: this is what every status poll reads."""
    query = select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id).options(joinedload(Job.artifacts))
    return session.scalars(query).unique().one_or_none()


def list_page(
    session: Session, tenant_id: str, page: PageRequest, status: str | None = None
) -> tuple[list[Job], str | None]:
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == status)
    return paginate(session, query, Job, page)


def created_between(session: Session, tenant_id: str, since: datetime | None, until: datetime | None) -> list[Job]:
    query = select(Job).where(Job.tenant_id == tenant_id).order_by(Job.created_at.desc())
    return list(session.scalars(created_in(query, since, until)))


def recent(session: Session, tenant_id: str, limit: int) -> list[Job]:
    query = select(Job).where(Job.tenant_id == tenant_id).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    return list(session.scalars(query))


def created_in(query, since: datetime | None, until: datetime | None):  # noqa: ANN001, ANN202
    """`query` limited to jobs created in [since, until); either end may be open."""
    if since is not None:
        query = query.where(Job.created_at >= since)
    if until is not None:
        query = query.where(Job.created_at < until)
    return query


def savings_totals(
    session: Session, tenant_id: str, since: datetime | None = None, until: datetime | None = None
) -> dict[str, float | int]:
    """Per-day savings summed over the tenant's succeeded jobs in the window, with how many jobs count
    in each unit (a job counts where its figure is set: app.jobs.report_figures)."""
    figures = (Job.saving_kwh_per_day, Job.saving_co2e_g_per_day, Job.saving_water_l_per_day,
               Job.saving_embodied_gco2e_per_day)
    query = select(
        *(func.coalesce(func.sum(column), 0.0) for column in figures),
        func.count(Job.saving_kwh_per_day), func.count(Job.saving_water_l_per_day),
        func.count(Job.saving_embodied_gco2e_per_day),
    ).where(Job.tenant_id == tenant_id, Job.status == SUCCEEDED)
    kwh, co2, water, embodied, kwh_jobs, water_jobs, embodied_jobs = session.execute(created_in(query, since, until)).one()
    return {"kwh_per_day": kwh, "co2e_g_per_day": co2, "water_l_per_day": water, "embodied_gco2e_per_day": embodied,
            "jobs_counted": kwh_jobs, "water_jobs_counted": water_jobs, "embodied_jobs_counted": embodied_jobs}


def add(session: Session, job: Job) -> Job:
    session.add(job)
    session.flush()
    return job


def _count_active(session: Session, column, value: str) -> int:  # noqa: ANN001
    query = select(func.count()).select_from(Job).where(column == value, Job.status.in_((QUEUED, RUNNING)))
    return session.scalar(query) or 0


def count_active_for_model(session: Session, model_id: str) -> int:
    return _count_active(session, Job.model_id, model_id)


def count_active_for_dataset(session: Session, dataset_id: str) -> int:
    return _count_active(session, Job.dataset_id, dataset_id)


def count_active_naming(session: Session, tenant_id: str, object_id: str) -> int:
    """The tenant's queued or running jobs whose recipe names `object_id` (ids are 32 random hex
    characters, so a match in the recipe's text is that id): e.g. a federated step's site dataset."""
    query = select(func.count()).select_from(Job).where(
        Job.tenant_id == tenant_id, Job.status.in_((QUEUED, RUNNING)), cast(Job.recipe, Text).contains(object_id)
    )
    return session.scalar(query) or 0


def count_active_for_tenant(session: Session, tenant_id: str) -> int:
    return _count_active(session, Job.tenant_id, tenant_id)


def transition(session: Session, job_id: str, from_statuses: tuple[str, ...], **values) -> bool:
    """Changes a job only if it is still in one of `from_statuses`; True when it did.

    A single conditional UPDATE, so a cancel and a worker's claim cannot both win.
    """
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(from_statuses)).values(**values),
        execution_options={"synchronize_session": False},
    )
    session.expire_all()
    return result.rowcount == 1


def set_progress(session: Session, job_id: str, stage: str, fraction: float) -> None:
    session.execute(
        update(Job).where(Job.id == job_id, Job.status == RUNNING).values(stage=stage, progress=fraction),
        execution_options={"synchronize_session": False},
    )


def heartbeat(session: Session, job_id: str, now: datetime) -> bool | None:
    """Marks a running job alive and returns whether its cancellation was requested.

    None means the job is no longer running (the reconciler took it back): its runner must stop.
    """
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == RUNNING)
        .values(heartbeat_at=now)
        .returning(Job.cancel_requested),
        execution_options={"synchronize_session": False},
    )
    row = result.first()
    return None if row is None else bool(row[0])


def mark_enqueued(session: Session, job_id: str, now: datetime) -> None:
    session.execute(
        update(Job).where(Job.id == job_id).values(enqueued_at=now), execution_options={"synchronize_session": False}
    )


def never_enqueued(session: Session, created_before: datetime) -> list[Job]:
    query = select(Job).where(Job.status == QUEUED, Job.enqueued_at.is_(None), Job.created_at < created_before)
    return list(session.scalars(query))


def enqueued_before(session: Session, before: datetime) -> list[Job]:
    """Queued jobs whose message the broker accepted before `before`: it should still hold them."""
    query = select(Job).where(Job.status == QUEUED, Job.enqueued_at.is_not(None), Job.enqueued_at < before)
    return list(session.scalars(query))


def lost(session: Session, heartbeat_before: datetime) -> list[Job]:
    """Running jobs whose worker stopped sending heartbeats."""
    return list(session.scalars(select(Job).where(Job.status == RUNNING, Job.heartbeat_at < heartbeat_before)))

