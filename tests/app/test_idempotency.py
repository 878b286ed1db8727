"""Idempotency-Key on job submission and uploads: a retry returns the first result and creates nothing."""

from concurrent.futures import ThreadPoolExecutor

import redis

from tests.app.conftest import stored_files, upload
from tests.conftest import REDIS_URL

QUANTIZE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}


def submit(client, model_id: str, key: str, recipe=QUANTIZE):
    return client.post("/v1/jobs", json={"model_id": model_id, "recipe": recipe}, headers={"Idempotency-Key": key})


def queued_messages() -> int:
    return redis.Redis.from_url(REDIS_URL).llen("cpu")


def test_a_retried_submit_returns_the_first_job_and_enqueues_nothing(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    before = queued_messages()
    first = submit(client, model_id, "retry-me")
    again = submit(client, model_id, "retry-me")
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert [job["id"] for job in client.get("/v1/jobs").json()["items"]] == [first.json()["id"]]
    assert queued_messages() == before + 1
    # Without a key, or with another one, a submit is a new job.
    assert submit(client, model_id, "another").json()["id"] != first.json()["id"]


def test_the_same_key_for_another_request_is_refused(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    submit(client, model_id, "k1")
    other = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic", "per_channel": False}}]}
    response = submit(client, model_id, "k1", recipe=other)
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/idempotency-key-reused"
    assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]


def test_a_failed_request_does_not_use_up_its_key(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    bad = submit(client, model_id, "k2", recipe={"steps": [{"technique": "quantize", "params": {}}]})
    assert bad.status_code == 422
    assert submit(client, model_id, "k2").status_code == 202


def test_concurrent_submits_with_one_key_make_one_job(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda _: submit(client, model_id, "race"), range(6)))
    assert {response.status_code for response in responses} == {202}
    assert len({response.json()["id"] for response in responses}) == 1
    assert len(client.get("/v1/jobs").json()["items"]) == 1


def test_retried_uploads_store_one_model_and_one_dataset(client, tiny_encoder_zip, tmp_path):
    headers = {"Idempotency-Key": "upload-1"}
    first = upload_with(client, "/v1/models", tiny_encoder_zip, headers)
    files_after_first = sorted(stored_files())
    again = upload_with(client, "/v1/models", tiny_encoder_zip, headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert len(client.get("/v1/models").json()["items"]) == 1
    assert sorted(stored_files()) == files_after_first  # nothing new stored, no scratch left

    dataset = tmp_path / "rows.jsonl"
    dataset.write_text('{"text": "one"}\n{"text": "two"}\n')
    first = upload_with(client, "/v1/datasets", dataset, headers)  # a key is per endpoint
    again = upload_with(client, "/v1/datasets", dataset, headers)
    assert first.status_code == again.status_code == 201 and again.json()["id"] == first.json()["id"]
    dataset.write_text('{"text": "changed"}\n')
    assert upload_with(client, "/v1/datasets", dataset, headers).status_code == 422
    assert len(client.get("/v1/datasets").json()["items"]) == 1


def test_a_malformed_key_is_a_422(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    for key in ("", "has space", "x" * 256):
        response = submit(client, model_id, key)
        assert response.status_code == 422, key
        assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]


def upload_with(client, route: str, path, headers: dict):
    with path.open("rb") as handle:
        return client.post(route, files={"file": (path.name, handle)}, data={"name": "n"}, headers=headers)
