"""Job events for webhooks, recorded in the transaction of the state change they report."""

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.base import new_id, utcnow
from app.db.session import run_after_commit
from app.jobs.orm import Job
from app.jobs.schemas import JobOut
from app.webhooks.dispatch import dispatch_delivery
from app.webhooks.orm import WebhookDelivery

EVENTS = ("queued", "running", "requeued", "succeeded", "failed", "cancelled", "timed_out")


def record_job_event(session: Session, job_id: str, event: str) -> WebhookDelivery | None:
    """Call right after the job's state changed, in the same session; the delivery is sent once the
    transaction commits. Nothing happens for a job without a webhook_url, or for an event already
    recorded for this attempt."""
    if event not in EVENTS:
        raise ValueError(f"unknown job event {event!r}")
    job = session.get(Job, job_id)
    if job is None or not job.webhook_url:
        return None
    now = utcnow()
    delivery = WebhookDelivery(
        tenant_id=job.tenant_id,
        job_id=job.id,
        event=f"job.{event}",
        event_key=f"{event}:{job.attempts}",
        url=job.webhook_url,
        payload={
            "id": new_id(),
            "event": f"job.{event}",
            "created_at": now.isoformat(),
            "job": JobOut.from_job(job).model_dump(mode="json"),
        },
        next_attempt_at=now,
    )
    try:
        with session.begin_nested():
            session.add(delivery)
            session.flush()
    except IntegrityError:
        return None  # this event of this attempt is already recorded
    delivery_id = delivery.id
    run_after_commit(session, lambda: dispatch_delivery(delivery_id))
    return delivery
