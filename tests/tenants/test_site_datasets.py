"""Site-held datasets belong to a tenant: another tenant neither sees its sites nor trains on its datasets."""

from tests.app.test_sites_api import site_dataset_body
from tests.tenants.test_isolation import upload_as


def test_another_tenants_site_dataset_is_not_found_in_a_federated_step(auth_app, alice, bob, tiny_encoder_zip):
    response = auth_app.post("/v1/sites/clinic-a/datasets", json=site_dataset_body(), headers=alice.headers)
    assert response.status_code == 201, response.text
    alices = response.json()["id"]
    assert auth_app.post("/v1/sites/clinic-a/datasets", json=site_dataset_body()).status_code == 401
    assert [site["site"] for site in auth_app.get("/v1/sites", headers=alice.headers).json()] == ["clinic-a"]
    assert auth_app.get("/v1/sites", headers=bob.headers).json() == []

    bobs_model = upload_as(auth_app, bob, tiny_encoder_zip, "/v1/models", "bob-model")
    recipe = {"steps": [{"technique": "federated", "params": {"sites": [{"site": "clinic-a", "dataset_id": alices}]}}]}
    response = auth_app.post("/v1/jobs", json={"model_id": bobs_model["id"], "recipe": recipe}, headers=bob.headers)
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["loc"] == ["body", "recipe", "steps", 0, "params", "sites"]
    assert error["msg"].startswith(f"dataset {alices} not found")
