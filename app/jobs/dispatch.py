"""Sends a committed job to its Celery queue by task name, so the API never imports the task code.

If the broker is down, the job stays queued with no `enqueued_at`, and the reconciler in the
workers sends it later: the database, not the broker, is the source of truth.
"""

import logging

from app.db.base import utcnow
from app.db.session import session_scope
from app.jobs import repository
from workers.celery_app import RUN_JOB_TASK, celery_app

logger = logging.getLogger(__name__)


def dispatch_job(job_id: str, queue: str) -> bool:
    """True when the broker accepted the message."""
    try:
        celery_app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
    except Exception:  # noqa: BLE001 - any broker failure leaves the job for the reconciler
        logger.exception("could not send job %s to queue %s; the reconciler will retry", job_id, queue)
        return False
    try:
        with session_scope() as session:
            repository.mark_enqueued(session, job_id, utcnow())
    except Exception:  # noqa: BLE001 - the message is sent; at worst the reconciler sends a duplicate, which is skipped
        logger.exception("job %s was sent but could not be marked as enqueued", job_id)
    return True
