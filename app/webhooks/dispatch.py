"""Sends a delivery's message to the `webhooks` queue. A failed send is logged, not raised: the
delivery row is the record, and the reconciler resends pending deliveries the broker lost."""

import logging

from workers.celery_app import DELIVER_WEBHOOK_TASK, WEBHOOK_QUEUE, celery_app

logger = logging.getLogger(__name__)


def dispatch_delivery(delivery_id: str, countdown: float | None = None) -> bool:
    try:
        celery_app.send_task(DELIVER_WEBHOOK_TASK, args=[delivery_id], queue=WEBHOOK_QUEUE, countdown=countdown)
    except Exception:  # noqa: BLE001 - the reconciler resends; the state change that caused it stands
        logger.warning("could not enqueue webhook delivery %s; the reconciler will resend it", delivery_id,
                       exc_info=True)
        return False
    return True
