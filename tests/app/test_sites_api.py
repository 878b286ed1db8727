"""Site-held datasets through the API: a site registers a dataset's metadata (its rows stay at the site),
the tenant sees its sites, and everything that would read the rows here is refused with what to do instead."""

import hashlib
import json
import uuid

import pytest

from tests.app.conftest import stored_files, upload

SITE = "clinic-a"


def site_dataset_body(**overrides) -> dict:
    return {
        "name": "ward notes", "filename": "notes.jsonl", "sha256": hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        "num_rows": 40, "num_labelled": 40, "columns": ["label", "text"], "size_bytes": 2048, **overrides,
    }


def register(client, site: str = SITE, **overrides):
    return client.post(f"/v1/sites/{site}/datasets", json=site_dataset_body(**overrides))


@pytest.fixture
def site_dataset(client) -> dict:
    response = register(client)
    assert response.status_code == 201, response.text
    return response.json()


def test_registering_a_site_dataset_keeps_its_row_and_no_file(client, site_dataset):
    from app.datasets import repository
    from app.db.session import session_scope
    from app.sites.paths import site_storage_key

    assert site_dataset["site"] == SITE and site_dataset["name"] == "ward notes"
    assert site_dataset["columns"] == ["text", "label"]  # in the order uploads record them
    lineage = (site_dataset["version"], site_dataset["parent_id"], site_dataset["lineage_id"])
    assert lineage == (1, None, site_dataset["id"])
    assert client.get(f"/v1/datasets/{site_dataset['id']}").json()["site"] == SITE
    assert stored_files() == []
    with session_scope() as session:
        row = repository.get(session, site_dataset["id"])
        assert row.site == SITE
        assert row.storage_key == site_storage_key(SITE, site_dataset["sha256"], "notes.jsonl")


def test_sites_lists_the_tenants_sites_and_whether_a_worker_serves_each(client, site_dataset, monkeypatch):
    from app.cli import worker_queues
    from workers import node_heartbeat

    assert register(client, site="branch-2", filename="b.csv", columns=["text"], num_labelled=0).status_code == 201
    assert register(client, filename="more.csv").status_code == 201
    assert client.get("/v1/sites").json() == [
        {"site": "branch-2", "datasets": 1, "queue": "site.branch-2", "worker_alive": False},
        {"site": SITE, "datasets": 2, "queue": f"site.{SITE}", "worker_alive": False},
    ]
    # What `compresso worker --site clinic-a` records on its heartbeat.
    monkeypatch.setenv(node_heartbeat.QUEUES_VARIABLE, worker_queues(None, SITE))
    node_heartbeat.beat_once(f"site-{SITE}@host")
    alive = {site["site"]: site["worker_alive"] for site in client.get("/v1/sites").json()}
    assert alive == {"branch-2": False, SITE: True}


@pytest.mark.parametrize(
    ("site", "overrides", "loc", "message"),
    [
        ("Clinic_A", {}, ["path", "site"], "lowercase letters, digits or '-'"),
        ("-clinic", {}, ["path", "site"], "starting with a letter or digit"),
        (SITE, {"sha256": "abc"}, ["body", "sha256"], "pattern"),
        (SITE, {"sha256": "g" * 64}, ["body", "sha256"], "pattern"),
        (SITE, {"columns": ["label"]}, ["body", "columns"], "'text' column"),
        (SITE, {"columns": ["text", "score"]}, ["body", "columns"], "unknown column 'score'"),
        (SITE, {"num_rows": 0, "num_labelled": 0}, ["body", "num_rows"], "greater than or equal to 1"),
        (SITE, {"num_labelled": 41}, ["body"], "more than num_rows"),
        (SITE, {"filename": "notes.txt"}, ["body", "filename"], ".jsonl or .csv"),
        (SITE, {"filename": "../notes.jsonl"}, ["body", "filename"], "without a folder"),
    ],
)
def test_a_registration_that_does_not_fit_is_a_422_naming_the_field(client, site, overrides, loc, message):
    response = register(client, site=site, **overrides)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == loc
    assert message in response.json()["detail"]
    assert client.get("/v1/datasets").json()["items"] == []


def test_a_retried_registration_with_its_idempotency_key_creates_nothing(client):
    body, headers = site_dataset_body(), {"Idempotency-Key": "register-once"}
    first = client.post(f"/v1/sites/{SITE}/datasets", json=body, headers=headers)
    again = client.post(f"/v1/sites/{SITE}/datasets", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert len(client.get("/v1/datasets").json()["items"]) == 1


def test_labelling_revising_or_suggesting_on_a_site_dataset_is_a_409_that_says_what_to_do(
    client, site_dataset, tmp_path
):
    route = f"/v1/datasets/{site_dataset['id']}"
    response = client.post(f"{route}/labels", json={"labels": [{"row": 0, "label": "a"}]})
    assert response.status_code == 409, response.text
    assert f"held by site '{SITE}', not here" in response.json()["detail"]
    assert f"compresso site add-dataset FILE --site {SITE}" in response.json()["detail"]

    revised = tmp_path / "revised.jsonl"
    revised.write_text('{"text": "hello"}\n', encoding="utf-8")
    response = upload(client, revised, route=f"{route}/versions")
    assert response.status_code == 409 and "cannot be revised here" in response.json()["detail"]

    response = client.post(f"{route}/suggest-labels", json={"model_id": "any"})
    assert response.status_code == 409 and "uploaded with POST /v1/datasets" in response.json()["detail"]
    assert [item["id"] for item in client.get(f"{route}/versions").json()] == [site_dataset["id"]]
    assert stored_files() == []


def test_a_site_dataset_cannot_be_a_jobs_dataset(client, site_dataset, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    response = client.post("/v1/jobs", json={
        "model_id": model_id, "dataset_id": site_dataset["id"],
        "recipe": {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]},
    })
    assert response.status_code == 422, response.text
    error = response.json()["errors"][0]
    assert error["loc"] == ["body", "dataset_id"]
    assert error["msg"] == (f"dataset {site_dataset['id']} is held by site {SITE}; name it in a federated step's "
                            "sites instead")


def test_deleting_a_site_dataset_removes_its_row_only(client, site_dataset):
    from app.config import get_settings
    from app.sites.paths import site_dataset_path

    # The site's own copy, as `compresso site add-dataset` keeps it on the site's host.
    kept = site_dataset_path(get_settings().site_data_dir, SITE, site_dataset["sha256"], "notes.jsonl")
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps({"text": "stays at the site"}) + "\n", encoding="utf-8")
    try:
        assert client.delete(f"/v1/datasets/{site_dataset['id']}").status_code == 204
        assert client.get(f"/v1/datasets/{site_dataset['id']}").status_code == 404
        assert client.get("/v1/sites").json() == []
        assert kept.exists() and stored_files() == []
    finally:
        kept.unlink()
