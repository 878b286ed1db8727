"""Webhooks in-process on the real Postgres: events recorded with each state change, delivered signed
to a real HTTP receiver, retried with backoff, listed per tenant."""

from datetime import timedelta

import pytest

from app.db.session import session_scope
from app.webhooks import repository
from app.webhooks.orm import WebhookDelivery
from tests.app.conftest import client, tiny_encoder_dir, tiny_encoder_zip, upload  # noqa: F401 - shared fixtures
from tests.webhooks.receiver import Receiver, start_receiver
from workers.tasks.deliver_webhook import backoff_seconds, deliver

QUANTIZE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}


@pytest.fixture
def receiver(client):  # noqa: F811
    found = Receiver(secret=client.get("/v1/webhooks/secret").json()["secret"])
    server = start_receiver(found)
    yield found
    server.shutdown()


@pytest.fixture
def fast_retries(monkeypatch):
    from app.config import get_settings

    monkeypatch.setenv("COMPRESSO_WEBHOOKS__MAX_ATTEMPTS", "3")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def deliveries(job_id: str) -> list[WebhookDelivery]:
    with session_scope() as session:
        return sorted(
            (d for d in session.query(WebhookDelivery).filter_by(job_id=job_id)), key=lambda d: d.created_at
        )


def submit(client, model_id: str, url: str):  # noqa: F811
    return client.post("/v1/jobs", json={"model_id": model_id, "recipe": QUANTIZE, "webhook_url": url})


def test_each_state_change_is_delivered_signed(client, receiver, tiny_encoder_zip):  # noqa: F811
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    job = submit(client, model_id, receiver.url).json()
    assert job["webhook_url"] == receiver.url
    client.post(f"/v1/jobs/{job['id']}/cancel")
    recorded = deliveries(job["id"])
    assert [d.event for d in recorded] == ["job.queued", "job.cancelled"]
    assert recorded[1].payload["job"]["status"] == "cancelled"

    for delivery in recorded:
        assert deliver(delivery.id) == "delivered"
    assert [r.event for r in receiver.accepted()] == ["job.queued", "job.cancelled"]
    assert all(r.signature_valid for r in receiver.accepted())
    assert deliver(recorded[0].id) == "skipped"  # a duplicate message sends nothing
    assert len(receiver.accepted()) == 2


def test_a_failing_receiver_is_retried_then_given_up(client, receiver, tiny_encoder_zip, fast_retries):  # noqa: F811
    receiver.fail_first = 2
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    job_id = submit(client, model_id, receiver.url).json()["id"]
    [queued] = deliveries(job_id)
    assert deliver(queued.id) == "pending" and deliver(queued.id) == "pending"
    [retried] = deliveries(job_id)
    assert retried.attempts == 2 and retried.last_status_code == 500 and "500" in retried.last_error
    assert deliver(queued.id) == "delivered"
    [done] = deliveries(job_id)
    assert (done.attempts, done.last_status_code, done.last_error) == (3, 204, None)

    receiver.fail_first = 10**6
    client.post(f"/v1/jobs/{job_id}/cancel")
    cancelled = deliveries(job_id)[1]
    outcomes = [deliver(cancelled.id) for _ in range(3)]
    assert outcomes == ["pending", "pending", "failed"]  # max_attempts is 3 here
    assert backoff_seconds(10, 1) == 10 and backoff_seconds(10, 3) == 40 and backoff_seconds(10, 20) == 3600


def test_deliveries_are_listed_and_filtered(client, receiver, tiny_encoder_zip):  # noqa: F811
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    job_id = submit(client, model_id, receiver.url).json()["id"]
    listed = client.get("/v1/webhooks/deliveries", params={"job_id": job_id}).json()["items"]
    assert [(d["event"], d["status"], d["attempts"]) for d in listed] == [("job.queued", "pending", 0)]
    deliver(listed[0]["id"])
    assert client.get("/v1/webhooks/deliveries", params={"status": "delivered"}).json()["items"][0]["id"] == listed[0]["id"]
    assert client.get("/v1/webhooks/deliveries", params={"status": "pending"}).json()["items"] == []


def test_a_job_without_a_webhook_records_nothing_and_bad_urls_are_refused(client, tiny_encoder_zip):  # noqa: F811
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    plain = client.post("/v1/jobs", json={"model_id": model_id, "recipe": QUANTIZE}).json()
    assert deliveries(plain["id"]) == []
    for url in ("ftp://example.org/hook", "https://user:pw@example.org/hook", "not a url"):
        response = submit(client, model_id, url)
        assert response.status_code == 422, url
        assert response.json()["errors"][0]["loc"] == ["body", "webhook_url"]


def test_private_destinations_are_refused_when_not_allowed(client, receiver, tiny_encoder_zip, monkeypatch):  # noqa: F811
    from app.config import get_settings

    model_id = upload(client, tiny_encoder_zip).json()["id"]
    job_id = submit(client, model_id, receiver.url).json()["id"]
    monkeypatch.setenv("COMPRESSO_WEBHOOKS__ALLOW_PRIVATE", "false")
    get_settings.cache_clear()
    try:
        assert submit(client, model_id, receiver.url).status_code == 422  # a literal loopback address
        [queued] = deliveries(job_id)
        assert deliver(queued.id) == "failed"  # checked again at delivery, without retries
        assert "private address" in deliveries(job_id)[0].last_error
        assert receiver.accepted() == []
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_the_secret_is_per_tenant_and_rotates(client):  # noqa: F811
    first = client.get("/v1/webhooks/secret").json()["secret"]
    rotated = client.post("/v1/webhooks/secret/rotate").json()["secret"]
    assert len(first) == len(rotated) == 64 and first != rotated
    assert client.get("/v1/webhooks/secret").json()["secret"] == rotated


def test_the_reconciler_resends_a_delivery_whose_message_was_lost(client, receiver, tiny_encoder_zip):  # noqa: F811
    import redis

    from app.config import Settings
    from app.db.base import utcnow
    from tests.conftest import REDIS_URL
    from workers.reconciler import reconcile_once

    model_id = upload(client, tiny_encoder_zip).json()["id"]
    job_id = submit(client, model_id, receiver.url).json()["id"]
    [queued] = deliveries(job_id)
    assert reconcile_once(Settings())["deliveries_resent"] == []  # not overdue yet
    with session_scope() as session:
        repository.get(session, queued.id).next_attempt_at = utcnow() - timedelta(minutes=5)
    queue = redis.Redis.from_url(REDIS_URL)
    before = queue.llen("webhooks")
    assert reconcile_once(Settings())["deliveries_resent"] == [queued.id]
    assert queue.llen("webhooks") == before + 1
