"""Per-tenant limits: 429 with Retry-After past the concurrent jobs, 413 past the storage quota."""

from app.db.session import session_scope
from app.tenants import repository
from tests.tenants.test_isolation import QUANTIZE, upload_as


def set_limits(tenant_id: str, **limits) -> None:
    with session_scope() as session:
        tenant = repository.get(session, tenant_id)
        for name, value in limits.items():
            setattr(tenant, name, value)


def test_past_the_concurrent_jobs_limit_a_submit_gets_429(auth_app, alice, bob, tiny_encoder_zip):
    set_limits(alice.tenant_id, max_concurrent_jobs=1)
    model = upload_as(auth_app, alice, tiny_encoder_zip, "/v1/models", "m")
    body = {"model_id": model["id"], "recipe": QUANTIZE}
    first = auth_app.post("/v1/jobs", json=body, headers=alice.headers)
    assert first.status_code == 202
    second = auth_app.post("/v1/jobs", json=body, headers=alice.headers)
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) > 0
    assert "1 queued or running jobs" in second.json()["detail"]
    # Another tenant is not held back, and a finished job frees the slot.
    bobs_model = upload_as(auth_app, bob, tiny_encoder_zip, "/v1/models", "m")
    assert auth_app.post("/v1/jobs", json={**body, "model_id": bobs_model["id"]}, headers=bob.headers).status_code == 202
    auth_app.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=alice.headers)
    assert auth_app.post("/v1/jobs", json=body, headers=alice.headers).status_code == 202


def test_past_the_storage_quota_an_upload_gets_413(auth_app, alice, tiny_encoder_zip, tmp_path):
    model = upload_as(auth_app, alice, tiny_encoder_zip, "/v1/models", "m")
    used = model["size_bytes"]
    dataset = tmp_path / "rows.jsonl"
    dataset.write_text('{"text": "a sentence"}\n' * 200)

    # Some room, but less than the file: refused while streaming, and it says whose quota.
    set_limits(alice.tenant_id, max_storage_bytes=used + 100)
    with dataset.open("rb") as handle:
        response = auth_app.post("/v1/datasets", files={"file": (dataset.name, handle)}, data={"name": "d"},
                                 headers=alice.headers)
    assert response.status_code == 413
    assert "Tenant 'alice' has 100 bytes left" in response.json()["detail"]

    # No room at all: refused before the body is read. Deleting frees it.
    set_limits(alice.tenant_id, max_storage_bytes=used)
    response = auth_app.post("/v1/models", files={"file": ("m.zip", b"x")}, data={"name": "again"},
                             headers=alice.headers)
    assert response.status_code == 413
    assert f"stores {used:,} of its {used:,} bytes" in response.json()["detail"]
    assert auth_app.delete(f"/v1/models/{model['id']}", headers=alice.headers).status_code == 204
    assert upload_as(auth_app, alice, dataset, "/v1/datasets", "d")["num_rows"] == 200


def test_an_extracted_model_larger_than_the_room_left_is_refused(auth_app, alice, tiny_encoder_zip):
    # The archive fits, but the extracted folder (what is stored) does not.
    set_limits(alice.tenant_id, max_storage_bytes=tiny_encoder_zip.stat().st_size + 1000)
    with tiny_encoder_zip.open("rb") as handle:
        response = auth_app.post("/v1/models", files={"file": (tiny_encoder_zip.name, handle)}, data={"name": "m"},
                                 headers=alice.headers)
    assert response.status_code == 413, response.text
    assert "this upload needs" in response.json()["detail"]
    assert auth_app.get("/v1/models", headers=alice.headers).json()["items"] == []
