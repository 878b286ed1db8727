"""Every endpoint scoped to the caller's tenant: another tenant's object answers 404, lists skip it."""

import pytest

from app.artifacts.orm import Artifact
from app.db.session import session_scope
from app.jobs import repository as jobs_repository
from app.jobs.orm import RUNNING, SUCCEEDED, QUEUED
from tests.app.conftest import upload
from tests.tenants.conftest import Caller

QUANTIZE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}


def upload_as(client, caller: Caller, path, route: str, name: str) -> dict:
    with path.open("rb") as handle:
        response = client.post(route, files={"file": (path.name, handle)}, data={"name": name}, headers=caller.headers)
    assert response.status_code == 201, response.text
    return response.json()


def submit_as(client, caller: Caller, **body) -> dict:
    response = client.post("/v1/jobs", json={"recipe": QUANTIZE, **body}, headers=caller.headers)
    assert response.status_code == 202, response.text
    return response.json()


def finish_with_an_artifact(job_id: str, tmp_path) -> str:
    """Marks the job succeeded with a report and a stored artifact, as a worker would."""
    from app.config import get_settings
    from app.core.storage import get_storage

    source = tmp_path / "report.json"
    source.write_text('{"ok": true}')
    key = f"jobs/{job_id}/report.json"
    get_storage(get_settings().storage_dir).put(source, key)
    with session_scope() as session:
        jobs_repository.transition(session, job_id, (QUEUED,), status=RUNNING)
        jobs_repository.transition(session, job_id, (RUNNING,), status=SUCCEEDED, report={"steps": []}, progress=1.0)
        artifact = Artifact(job_id=job_id, kind="report", filename="report.json", size_bytes=12, sha256="0" * 64,
                            storage_key=key)
        session.add(artifact)
        session.flush()
        return artifact.id


@pytest.fixture
def alices_things(auth_app, alice, tiny_encoder_zip, tmp_path):
    dataset_file = tmp_path / "rows.jsonl"
    dataset_file.write_text('{"text": "a sentence"}\n{"text": "another"}\n')
    model = upload_as(auth_app, alice, tiny_encoder_zip, "/v1/models", "alice-model")
    dataset = upload_as(auth_app, alice, dataset_file, "/v1/datasets", "alice-data")
    finished = submit_as(auth_app, alice, model_id=model["id"], dataset_id=dataset["id"])
    artifact_id = finish_with_an_artifact(finished["id"], tmp_path)
    queued = submit_as(auth_app, alice, model_id=model["id"])
    return {"model": model["id"], "dataset": dataset["id"], "job": finished["id"], "queued": queued["id"],
            "artifact": artifact_id}


def requests_on(things: dict) -> list[tuple[str, str]]:
    return [
        ("GET", f"/v1/models/{things['model']}"),
        ("GET", f"/v1/datasets/{things['dataset']}"),
        ("GET", f"/v1/jobs/{things['job']}"),
        ("GET", f"/v1/jobs/{things['job']}/report"),
        ("GET", f"/v1/jobs/{things['job']}/logs"),
        ("GET", f"/v1/artifacts/{things['artifact']}"),
        ("POST", f"/v1/jobs/{things['queued']}/cancel"),
        ("DELETE", f"/v1/datasets/{things['dataset']}"),
        ("DELETE", f"/v1/models/{things['model']}"),
    ]


def test_another_tenants_objects_answer_404_everywhere(auth_app, alices_things, alice, bob):
    for method, path in requests_on(alices_things):
        response = auth_app.request(method, path, headers=bob.headers)
        assert response.status_code == 404, (method, path, response.text)
    # Nothing was changed by those attempts, and the owner still reaches every one of them.
    for method, path in requests_on(alices_things)[:-2]:  # the deletes are checked last, below
        response = auth_app.request(method, path, headers=alice.headers)
        assert response.status_code == 200, (method, path, response.text)
    assert auth_app.get(f"/v1/jobs/{alices_things['queued']}", headers=alice.headers).json()["status"] == "cancelled"


def test_lists_and_the_summary_show_only_the_callers_own(auth_app, alices_things, alice, bob):
    for route in ("/v1/models", "/v1/datasets", "/v1/jobs"):
        assert auth_app.get(route, headers=bob.headers).json()["items"] == []
        assert len(auth_app.get(route, headers=alice.headers).json()["items"]) >= 1
    bobs_summary = auth_app.get("/v1/reports/summary", headers=bob.headers).json()
    alices_summary = auth_app.get("/v1/reports/summary", headers=alice.headers).json()
    assert sum(bobs_summary["jobs_by_status"].values()) == 0
    assert sum(alices_summary["jobs_by_status"].values()) == 2


def test_a_job_cannot_use_another_tenants_model_or_dataset(auth_app, alices_things, bob, tiny_encoder_zip):
    response = auth_app.post("/v1/jobs", json={"model_id": alices_things["model"], "recipe": QUANTIZE},
                             headers=bob.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "model_id"]
    bobs_model = upload_as(auth_app, bob, tiny_encoder_zip, "/v1/models", "bob-model")
    response = auth_app.post(
        "/v1/jobs", json={"model_id": bobs_model["id"], "dataset_id": alices_things["dataset"], "recipe": QUANTIZE},
        headers=bob.headers,
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "dataset_id"]


def test_webhook_deliveries_and_secrets_are_per_tenant(auth_app, alice, bob, tiny_encoder_zip):
    model = upload_as(auth_app, alice, tiny_encoder_zip, "/v1/models", "hooked")
    job = submit_as(auth_app, alice, model_id=model["id"], webhook_url="https://hooks.example.org/compresso")
    alices = auth_app.get("/v1/webhooks/deliveries", headers=alice.headers).json()["items"]
    assert [(d["job_id"], d["event"]) for d in alices] == [(job["id"], "job.queued")]
    assert auth_app.get("/v1/webhooks/deliveries", headers=bob.headers).json()["items"] == []
    assert auth_app.get("/v1/webhooks/deliveries", params={"job_id": job["id"]},
                        headers=bob.headers).json()["items"] == []
    secrets = {caller.tenant_name: auth_app.get("/v1/webhooks/secret", headers=caller.headers).json()["secret"]
               for caller in (alice, bob)}
    assert secrets["alice"] != secrets["bob"]
    auth_app.post("/v1/webhooks/secret/rotate", headers=bob.headers)
    assert auth_app.get("/v1/webhooks/secret", headers=alice.headers).json()["secret"] == secrets["alice"]


def test_dashboard_pages_are_scoped_too(auth_app, alices_things, alice, bob):
    assert auth_app.get(f"/jobs/{alices_things['job']}", headers=bob.headers).status_code == 404
    assert "alice-model" not in auth_app.get("/models", headers=bob.headers).text
    assert "alice-model" in auth_app.get("/models", headers=alice.headers).text
