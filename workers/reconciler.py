"""Keeps the broker in line with the database, the source of truth, from inside every worker.

- A queued job whose message never reached the broker (it was down at submit time) is sent again.
- Queued jobs whose messages the broker lost (Redis restarted without persistence) are sent again:
  when a queue holds fewer messages than there are queued jobs for it, all of them are resent, and
  the claim's conditional update turns the extra copies into no-ops.
- A running job whose worker stopped sending heartbeats (killed, machine lost) is put back in the
  queue, or failed once it has used up its attempts.
- A webhook delivery still pending well past its next try (its message was lost) is sent again.
Every change is a conditional UPDATE, so several workers reconciling at once do each thing once.
"""

import logging
import threading
from datetime import timedelta

from celery import signals

from app.config import Settings, get_settings
from app.db.base import utcnow
from app.db.session import session_scope
from app.job_logs import repository as job_logs
from app.job_logs.orm import WORKER
from app.jobs import repository
from app.jobs.dispatch import dispatch_job, queue_length
from app.jobs.orm import FAILED, QUEUED, RUNNING
from app.webhooks import repository as webhooks_repository
from app.webhooks.dispatch import dispatch_delivery
from app.webhooks.events import record_job_event

logger = logging.getLogger(__name__)



def reconcile_once(settings: Settings) -> dict[str, list[str]]:
    now = utcnow()
    # A just-submitted job is being sent by the API; only older ones are the reconciler's.
    grace = timedelta(seconds=settings.reconcile_grace_seconds)
    requeued, failed, to_send = [], [], []
    with session_scope() as session:
        stale_before = now - timedelta(seconds=settings.heartbeat_stale_seconds)
        for job in repository.lost(session, stale_before):
            if job.attempts >= settings.max_attempts:
                reason = f"The worker running this job was lost {job.attempts} times; giving up."
                if repository.transition(session, job.id, (RUNNING,), status=FAILED, error=reason, finished_at=now):
                    job_logs.append(session, job.id, job.attempts, [(WORKER, f"failed: {reason}")])
                    record_job_event(session, job.id, "failed")
                    failed.append(job.id)
            elif repository.transition(
                session, job.id, (RUNNING,), status=QUEUED, enqueued_at=None, stage="requeued: worker lost"
            ):
                lost = f"requeued: no heartbeat from the worker of attempt {job.attempts} since {job.heartbeat_at:%H:%M:%S}"
                job_logs.append(session, job.id, job.attempts, [(WORKER, lost)])
                record_job_event(session, job.id, "requeued")
                requeued.append(job.id)
        for job in repository.never_enqueued(session, now - grace):
            to_send.append((job.id, job.queue))
        waiting: dict[str, list[str]] = {}
        for job in repository.enqueued_before(session, now - grace):
            waiting.setdefault(job.queue, []).append(job.id)
        lost_deliveries = [d.id for d in webhooks_repository.overdue(session, now - grace)]
    for queue, job_ids in waiting.items():
        held = queue_length(queue)
        if held is not None and held < len(job_ids):
            logger.warning("queue %s holds %d messages for %d queued jobs; resending them", queue, held, len(job_ids))
            to_send.extend((job_id, queue) for job_id in job_ids)
    sent = [job_id for job_id, queue in to_send if dispatch_job(job_id, queue)]
    resent_deliveries = [delivery_id for delivery_id in lost_deliveries if dispatch_delivery(delivery_id)]
    for job_id in requeued:
        logger.warning("job %s lost its worker; requeued", job_id)
    for job_id in failed:
        logger.error("job %s lost its worker too often; failed", job_id)
    return {"requeued": requeued, "failed": failed, "sent": sent, "deliveries_resent": resent_deliveries}


def _loop(stop: threading.Event) -> None:
    settings = get_settings()
    while not stop.wait(settings.reconcile_seconds):
        try:
            reconcile_once(settings)
        except Exception:  # noqa: BLE001 - a database or broker outage must not kill the loop
            logger.exception("reconciliation failed; retrying in %ss", settings.reconcile_seconds)


_stop = threading.Event()


@signals.worker_ready.connect
def _start(**_kwargs) -> None:
    threading.Thread(target=_loop, args=(_stop,), name="compresso-reconciler", daemon=True).start()


@signals.worker_shutting_down.connect
def _halt(**_kwargs) -> None:
    _stop.set()
