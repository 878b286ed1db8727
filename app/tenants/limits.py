"""Per-tenant limits: jobs queued or running at once, and bytes stored. The tenant's own value
(set with `compresso tenants limits`) wins over the settings' default."""

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.artifacts.orm import Artifact
from app.config import Settings
from app.core.errors import PayloadTooLarge, TooManyRequests
from app.core.uploads import setting_limit_reason
from app.datasets.orm import Dataset
from app.db.session import release_connection
from app.idempotency import service as idempotency
from app.jobs import repository as jobs_repository
from app.jobs.orm import Job
from app.models.orm import Model
from app.tenants.orm import Tenant

# A job takes minutes; asking again sooner than this only adds load.
JOB_SLOT_RETRY_AFTER_SECONDS = 30


@dataclass(frozen=True)
class UploadLimit:
    max_bytes: int
    reason: str  # completes "The upload is larger than the limit of N bytes."


def storage_used(session: Session, tenant_id: str) -> int:
    """Bytes the tenant stores: model folders, dataset files (not those held by sites) and job artifacts."""
    models = select(func.coalesce(func.sum(Model.size_bytes), 0)).where(Model.tenant_id == tenant_id)
    datasets = select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(
        Dataset.tenant_id == tenant_id, Dataset.site.is_(None)
    )
    artifacts = (
        select(func.coalesce(func.sum(Artifact.size_bytes), 0))
        .join(Job, Job.id == Artifact.job_id)
        .where(Job.tenant_id == tenant_id)
    )
    return sum(int(session.scalar(query) or 0) for query in (models, datasets, artifacts))


def storage_limit(settings: Settings, tenant: Tenant) -> int:
    return tenant.max_storage_bytes or settings.limits.tenant_storage_bytes


def _quota_exceeded(tenant: Tenant, used: int, limit: int, adding: int = 0) -> PayloadTooLarge:
    wanted = f", and this upload needs {adding:,} more" if adding else ""
    return PayloadTooLarge(
        f"Tenant {tenant.name!r} stores {used:,} of its {limit:,} bytes{wanted}: "
        "delete models, datasets or jobs to make room, or ask the operator to raise the tenant's quota."
    )


def upload_limit(
    session: Session, settings: Settings, tenant: Tenant, max_bytes: int, setting: str, is_retry: bool = False
) -> UploadLimit:
    """The tighter of the upload size setting and the tenant's room left; refuses at once when it has none.
    A retry of an upload already stored (same Idempotency-Key) stores nothing, so only the setting applies."""
    if is_retry:
        return UploadLimit(max_bytes, setting_limit_reason(setting))
    used, limit = storage_used(session, tenant.id), storage_limit(settings, tenant)
    room = limit - used
    if room <= 0:
        raise _quota_exceeded(tenant, used, limit)
    if room < max_bytes:
        return UploadLimit(room, f"Tenant {tenant.name!r} has {room:,} bytes left of its {limit:,}-byte quota.")
    return UploadLimit(max_bytes, setting_limit_reason(setting))


def checked_before_streaming(
    session: Session, settings: Settings, tenant: Tenant, endpoint: str, idempotency_key: str | None,
    max_bytes: int, setting: str,
) -> UploadLimit:
    """An upload's limit, checked before its body is read, in one thread: the idempotency key's first
    use, then the tenant's room. Then the connection goes back to the pool: a body can take minutes
    to stream in, and a slow client must not hold one of the few connections every request needs."""
    is_retry = idempotency.seen(session, tenant.id, endpoint, idempotency_key)
    limit = upload_limit(session, settings, tenant, max_bytes, setting, is_retry)
    release_connection(session)
    return limit


def ensure_room(session: Session, settings: Settings, tenant: Tenant, adding: int) -> None:
    """For what is only known after the upload (an extracted archive is larger than the archive)."""
    used, limit = storage_used(session, tenant.id), storage_limit(settings, tenant)
    if used + adding > limit:
        raise _quota_exceeded(tenant, used, limit, adding)


def ensure_job_slot(session: Session, settings: Settings, tenant: Tenant) -> None:
    """Call before adding the job, in the same transaction: the tenant's row stays locked until it
    commits (on Postgres), so two submits at once cannot both take the last slot."""
    session.execute(select(Tenant.id).where(Tenant.id == tenant.id).with_for_update())
    limit = tenant.max_concurrent_jobs or settings.limits.tenant_concurrent_jobs
    active = jobs_repository.count_active_for_tenant(session, tenant.id)
    if active >= limit:
        raise TooManyRequests(
            f"Tenant {tenant.name!r} already has {active} queued or running jobs, its limit; "
            "retry when one has finished, or cancel one.",
            headers={"Retry-After": str(JOB_SLOT_RETRY_AFTER_SECONDS)},
        )
