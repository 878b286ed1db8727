"""Sends a committed job to its Celery queue by task name, so the API never imports the task code.

If the broker is down, the job stays queued with no `enqueued_at`, and the reconciler in the
workers sends it later: the database, not the broker, is the source of truth.
"""

import logging

from amqp.exceptions import ChannelError

from app.db.base import utcnow
from app.db.session import session_scope
from app.jobs import repository
from workers.celery_app import RUN_JOB_TASK, celery_app

logger = logging.getLogger(__name__)
NOT_FOUND = "404"  # kombu's virtual transports give the AMQP reply code as a string


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


def queue_length(queue: str) -> int | None:
    """Messages waiting in the broker's queue (not those a worker holds), or None when it cannot say."""
    try:
        with celery_app.connection_for_write() as connection:
            return connection.default_channel.queue_declare(queue=queue, passive=True).message_count
    except ChannelError as exc:
        if str(exc.reply_code) == NOT_FOUND:
            return 0  # Redis drops an empty list, and a restarted Redis knows no queue at all
        logger.warning("could not read the length of queue %s", queue, exc_info=True)
        return None
    except Exception:  # noqa: BLE001 - an unreachable broker: the next round asks again
        logger.warning("could not read the length of queue %s", queue, exc_info=True)
        return None
