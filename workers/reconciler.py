"""Keeps the broker in line with the database, the source of truth, from inside every worker.

- A queued job whose message never reached the broker (it was down at submit time) is sent again.
- Queued jobs whose messages the broker lost (Redis restarted without persistence) are sent again:
  when a queue holds fewer messages than there are queued jobs for it, all of them are resent, and
  the claim's conditional update turns the extra copies into no-ops.
- A running job whose worker stopped sending heartbeats (killed, machine lost) is put back in the
  queue (its next attempt resumes from its checkpoints), or failed once it has used up its attempts (its
  checkpoints are then deleted).
- A webhook delivery still pending well past its next try (its message was lost) is sent again.
- A label suggestion whose worker stopped sending heartbeats goes back to the queue (or fails once it has
  used up its attempts), and queued ones whose messages the broker lost are sent again, as jobs are.
Every change is a conditional UPDATE, so several workers reconciling at once do each thing once.
"""

import logging
import threading
from datetime import timedelta

from celery import signals
from sqlalchemy import update

from app.checkpoints.service import forget_checkpoints
from app.config import Settings, get_settings
from app.core.storage import storage_for
from app.db.base import utcnow
from app.db.session import session_scope
from app.job_logs import repository as job_logs
from app.job_logs.orm import WORKER
from app.datasets import repository as datasets_repository
from app.datasets.orm import SUGGESTION_FAILED, SUGGESTION_QUEUED, SUGGESTION_RUNNING, LabelSuggestion
from app.datasets.suggestions import SUGGESTION_QUEUE, dispatch_suggestion
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
        # What each queue should hold: every queued job the broker accepted, and (cpu) every queued suggestion.
        # Only those past the grace period are resent when it holds fewer: the API may be sending the others.
        expected: dict[str, int] = {SUGGESTION_QUEUE: 0}
        waiting: dict[str, list[str]] = {}
        for job in repository.enqueued_before(session, now):
            expected[job.queue] = expected.get(job.queue, 0) + 1
            if job.enqueued_at < now - grace:
                waiting.setdefault(job.queue, []).append(job.id)
        lost_deliveries = [d.id for d in webhooks_repository.overdue(session, now - grace)]
        suggestions_to_send = _hand_back_lost_suggestions(session, settings, stale_before, now)
        waiting_suggestions = []
        for suggestion in datasets_repository.queued_suggestions(session, now):
            if suggestion.id not in suggestions_to_send:  # sent below in any case
                expected[SUGGESTION_QUEUE] += 1
                if suggestion.created_at < now - grace:
                    waiting_suggestions.append(suggestion.id)
    for queue, count in expected.items():
        held = queue_length(queue) if count else None
        if held is not None and held < count:
            logger.warning("queue %s holds %d messages for %d queued jobs and suggestions; resending the older ones",
                           queue, held, count)
            to_send.extend((job_id, queue) for job_id in waiting.get(queue, []))
            if queue == SUGGESTION_QUEUE:
                suggestions_to_send += waiting_suggestions
    sent = [job_id for job_id, queue in to_send if dispatch_job(job_id, queue)]
    for suggestion_id in suggestions_to_send:
        dispatch_suggestion(suggestion_id)
    resent_deliveries = [delivery_id for delivery_id in lost_deliveries if dispatch_delivery(delivery_id)]
    for job_id in requeued:
        logger.warning("job %s lost its worker; requeued", job_id)
    for job_id in failed:
        logger.error("job %s lost its worker too often; failed", job_id)
        forget_checkpoints(job_id, storage_for(settings))
    return {"requeued": requeued, "failed": failed, "sent": sent, "deliveries_resent": resent_deliveries,
            "suggestions_sent": suggestions_to_send}


def _hand_back_lost_suggestions(session, settings: Settings, stale_before, now) -> list[str]:  # noqa: ANN001
    """Running suggestions whose worker went silent: queued again (their ids returned, to send), or failed
    after max_attempts. Conditional on the attempt's worker, so a concurrent reconciler does it once."""
    requeued = []
    for suggestion in datasets_repository.lost_suggestions(session, stale_before):
        this_attempt = (
            LabelSuggestion.id == suggestion.id, LabelSuggestion.status == SUGGESTION_RUNNING,
            LabelSuggestion.worker == suggestion.worker,
        )
        if suggestion.attempts >= settings.max_attempts:
            error = f"The worker choosing the rows was lost {suggestion.attempts} times; giving up. Ask again."
            session.execute(update(LabelSuggestion).where(*this_attempt).values(
                status=SUGGESTION_FAILED, error=error, finished_at=now))
            logger.error("label suggestion %s lost its worker too often; failed", suggestion.id)
        elif session.execute(update(LabelSuggestion).where(*this_attempt).values(
                status=SUGGESTION_QUEUED, started_at=None, worker=None)).rowcount:
            logger.warning("label suggestion %s lost its worker %s; requeued", suggestion.id, suggestion.worker)
            requeued.append(suggestion.id)
    return requeued


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
