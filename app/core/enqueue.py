"""Sends work to the Celery queues by task name, so the API never imports the engine's task code."""

from workers.celery_app import RUN_JOB_TASK, celery_app


def enqueue_job(job_id: str, queue: str) -> None:
    celery_app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
