"""Retries and downloads against answers the test controls (httpx's MockTransport): the same
Idempotency-Key on every attempt, and a download that fails leaves no file behind."""

import hashlib
from datetime import UTC, datetime
from collections.abc import Callable

import httpx
import pytest

from compresso import ChecksumMismatch, Client, ConnectionFailed, InvalidRequest
from compresso import client as client_module
from tests.sdk.conftest import QUANTIZE

BODY = b"compressed model bytes " * 100
ARTIFACT = {"id": "a1", "kind": "model", "filename": "model.zip", "size_bytes": len(BODY),
            "sha256": hashlib.sha256(BODY).hexdigest()}


def job_json(**overrides) -> dict:
    return {
        "id": "j1", "name": None, "status": "succeeded", "progress": {"stage": None, "fraction": 1.0, "steps": []},
        "error": None, "model_id": "m1", "dataset_id": None, "device": "cpu", "queue": "cpu", "recipe": QUANTIZE,
        "evaluation": {}, "deployment": {}, "attempts": 1, "cancel_requested": False,
        "created_at": "2026-11-28T17:58:04", "started_at": None, "finished_at": None, "artifacts": [ARTIFACT],
        "added_by_a_newer_server": True, **overrides,
    }


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> Client:
    return Client("http://compresso.test", transport=httpx.MockTransport(handler))


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(client_module, "RETRY_BACKOFF_SECONDS", 0.0)


def test_transient_failures_are_retried_with_the_same_idempotency_key():
    keys = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        if len(keys) == 1:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"title": "Service unavailable"})
        if len(keys) == 2:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(202, json=job_json(status="queued"))

    with mock_client(handler) as client:
        job = client.submit("m1", QUANTIZE)
    assert job.status == "queued" and job.created_at == datetime(2026, 11, 28, 17, 58, 4, tzinfo=UTC)
    assert len(keys) == 3 and len(set(keys)) == 1


def test_a_refusal_is_not_retried():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(422, headers={"Content-Type": "application/problem+json"}, json={
            "type": "/problems/invalid-request", "title": "Invalid request", "status": 422, "detail": "bad scheme",
            "instance": "/v1/jobs", "errors": [{"loc": ["body", "recipe"], "msg": "no", "allowed": ["int8_dynamic"]}],
        })

    with mock_client(handler) as client, pytest.raises(InvalidRequest) as caught:
        client.submit("m1", QUANTIZE, idempotency_key="mine")
    assert len(calls) == 1 and calls[0].headers["Idempotency-Key"] == "mine"
    problem = caught.value
    assert (problem.status, problem.type, problem.detail) == (422, "/problems/invalid-request", "bad scheme")
    assert caught.value.errors[0]["allowed"] == ["int8_dynamic"]


def serve_artifact(response: Callable[[], httpx.Response]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=job_json()) if request.url.path == "/v1/jobs/j1" else response()

    return handler


class BreaksOff(httpx.SyncByteStream):
    def __iter__(self):
        yield BODY[:100]
        raise httpx.ReadError("connection reset by peer")


@pytest.mark.parametrize("response, error", [
    (lambda: httpx.Response(200, content=BODY, headers={"X-Content-SHA256": "0" * 64}), ChecksumMismatch),
    (lambda: httpx.Response(200, content=BODY[:-1], headers={"Content-Length": str(len(BODY))}), ConnectionFailed),
    (lambda: httpx.Response(200, stream=BreaksOff(), headers={"Content-Length": str(len(BODY))}), ConnectionFailed),
], ids=["wrong-sha256", "short", "broken-off"])
def test_a_failed_download_leaves_nothing(tmp_path, response, error):
    existing = tmp_path / "model.zip"
    existing.write_bytes(b"an earlier download")
    with mock_client(serve_artifact(response)) as client, pytest.raises(error):
        client.download("j1", tmp_path)
    assert list(tmp_path.iterdir()) == [existing] and existing.read_bytes() == b"an earlier download"


def test_a_download_is_checked_and_reported(tmp_path):
    def verified() -> httpx.Response:
        return httpx.Response(200, content=BODY, headers={"X-Content-SHA256": ARTIFACT["sha256"]})

    progress = []
    with mock_client(serve_artifact(verified)) as client:
        path = client.download("j1", tmp_path / "out.zip", on_progress=lambda *done_total: progress.append(done_total))
    assert path.read_bytes() == BODY and list(tmp_path.iterdir()) == [path]
    assert progress[-1] == (len(BODY), len(BODY))
