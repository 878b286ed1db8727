"""The Celery application shared by the API (to send) and the workers (to run): queues and reliability."""

from celery import Celery
from kombu import Queue

from app.config import get_settings

RUN_JOB_TASK = "compresso.run_job"
DELIVER_WEBHOOK_TASK = "compresso.deliver_webhook"
SUGGEST_LABELS_TASK = "compresso.suggest_labels"
# Sent to a site's own queue (site.NAME, see workers.engine.federated.config) when a federated step starts.
FEDERATED_SITE_TASK = "compresso.federated_site"
WEBHOOK_QUEUE = "webhooks"
# Jobs go to cpu or gpu; webhook deliveries have a queue of their own, so a worker busy with an
# hours-long job never holds back an event (run `compresso worker --queues webhooks` beside them).
QUEUES = ("cpu", "gpu", WEBHOOK_QUEUE)


def make_celery(broker_url: str) -> Celery:
    app = Celery("compresso", broker=broker_url)
    app.conf.update(
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="cpu",
        # The database holds each job's state; no result backend is needed.
        task_ignore_result=True,
        # A job is acknowledged only once it has finished, so a worker that dies loses nothing;
        # the task is idempotent, so the redelivery does no harm.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A lost broker connection must not stop a running job: the database, not the message, is
        # the record, and the reconciler resends what the broker lost.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        include=[
            "workers.tasks.run_job", "workers.tasks.deliver_webhook", "workers.tasks.suggest_labels", "workers.tasks.federated_site",
            "workers.reconciler",
            "workers.node_heartbeat",
        ],
    )
    if broker_url.startswith(("redis://", "rediss://")):
        # Jobs run for hours: Redis must not redeliver a message that is still being worked on.
        # (The SQLAlchemy transport hands its options to create_engine, so they are Redis-only.)
        app.conf.broker_transport_options = {"visibility_timeout": 24 * 3600}
    return app


celery_app = make_celery(get_settings().broker_url)
