"""The Celery task that delivers one webhook event: sign, POST, and on failure schedule the next
try with exponential backoff, until it succeeds or runs out of tries. Each try is recorded on the
delivery row, which GET /v1/webhooks/deliveries lists."""

import json
import logging
import time
from datetime import timedelta

import httpx

from app.config import get_settings
from app.db.base import utcnow
from app.db.session import run_after_commit, session_scope
from app.tenants import repository as tenants_repository
from app.webhooks import repository
from app.webhooks.destinations import destination_problem
from app.webhooks.dispatch import dispatch_delivery
from app.webhooks.orm import DELIVERED, FAILED, PENDING
from app.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from workers.celery_app import DELIVER_WEBHOOK_TASK, celery_app

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 3600
ERROR_CHARS = 500


def backoff_seconds(base: float, attempts: int) -> float:
    """Wait after the `attempts`-th failed try: base, 2·base, 4·base, ..., at most an hour."""
    return min(base * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)


def deliver(delivery_id: str) -> str:
    settings = get_settings().webhooks
    with session_scope() as session:
        delivery = repository.get(session, delivery_id)
        if delivery is None or delivery.status != PENDING:
            return "skipped"  # already delivered or given up: a duplicate message
        secret = tenants_repository.get(session, delivery.tenant_id).webhook_secret
        url, event, payload = delivery.url, delivery.event, delivery.payload

    body = json.dumps(payload, separators=(",", ":")).encode()
    status_code, error = None, destination_problem(url, get_settings().webhooks_allow_private)
    permanent = error is not None
    if not permanent:
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "compresso-webhooks",
            EVENT_HEADER: event,
            DELIVERY_HEADER: delivery_id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }
        try:
            # No redirects: a receiver could otherwise bounce the call to an address the check refused.
            response = httpx.post(url, content=body, headers=headers, timeout=settings.timeout_seconds,
                                  follow_redirects=False)
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"the receiver answered {status_code}: {response.text[:ERROR_CHARS]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]

    with session_scope() as session:
        delivery = repository.get(session, delivery_id)
        if delivery is None or delivery.status != PENDING:
            return "skipped"
        delivery.attempts += 1
        delivery.last_status_code = status_code
        delivery.last_error = error
        now = utcnow()
        if error is None:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = DELIVERED, now, None
        elif permanent or delivery.attempts >= settings.max_attempts:
            delivery.status, delivery.next_attempt_at = FAILED, None
        else:
            wait = backoff_seconds(settings.retry_base_seconds, delivery.attempts)
            delivery.next_attempt_at = now + timedelta(seconds=wait)
            run_after_commit(session, lambda: dispatch_delivery(delivery_id, countdown=wait))
        outcome = delivery.status
    if error is not None:
        logger.warning("webhook delivery %s (%s) try failed: %s", delivery_id, event, error)
    return outcome


@celery_app.task(name=DELIVER_WEBHOOK_TASK)
def deliver_webhook(delivery_id: str) -> str:
    return deliver(delivery_id)
