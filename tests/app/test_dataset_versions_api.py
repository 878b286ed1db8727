"""Dataset versions and label suggestions through the API: labelling makes a new immutable version, a
revised file can be uploaded as one, and suggestion requests are checked, queued and read back."""

import json

import pytest

from tests.app.conftest import upload

ROWS = [{"text": f"sentence number {index}", **({"label": "a" if index % 2 else "b"} if index < 4 else {})}
        for index in range(10)]


@pytest.fixture
def dataset(client, tmp_path) -> dict:
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    response = upload(client, path, name="pool", route="/v1/datasets")
    assert response.status_code == 201, response.text
    return response.json()


def stored_rows(client, dataset_id: str) -> list[dict]:
    from app.config import get_settings
    from app.datasets import repository
    from app.db.session import session_scope

    with session_scope() as session:
        key = repository.get(session, dataset_id).storage_key
    path = get_settings().storage_dir / key
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_labelling_rows_makes_a_new_version_and_leaves_the_old_one_as_it_was(client, dataset):
    assert (dataset["version"], dataset["parent_id"], dataset["lineage_id"]) == (1, None, dataset["id"])
    assert dataset["num_labelled"] == 4
    response = client.post(f"/v1/datasets/{dataset['id']}/labels",
                           json={"labels": [{"row": 5, "label": "a"}, {"row": 6, "label": "b"}, {"row": 0, "label": None}]})
    assert response.status_code == 201, response.text
    second = response.json()
    assert (second["version"], second["parent_id"], second["lineage_id"]) == (2, dataset["id"], dataset["id"])
    assert second["name"] == "pool" and second["filename"] == "pool.v2.jsonl"
    assert second["num_rows"] == 10 and second["num_labelled"] == 5
    rows = stored_rows(client, second["id"])
    assert rows[5] == {"text": "sentence number 5", "label": "a"} and "label" not in rows[0]
    # The first version is untouched: same file, same hash, same labels.
    assert client.get(f"/v1/datasets/{dataset['id']}").json()["sha256"] == dataset["sha256"]
    assert stored_rows(client, dataset["id"]) == ROWS

    third = client.post(f"/v1/datasets/{dataset['id']}/labels", json={"labels": [{"row": 9, "label": "c"}]}).json()
    assert (third["version"], third["parent_id"]) == (3, dataset["id"])
    versions = client.get(f"/v1/datasets/{second['id']}/versions").json()
    assert [item["version"] for item in versions] == [1, 2, 3]


@pytest.mark.parametrize(
    ("labels", "loc", "message"),
    [
        ([{"row": 10, "label": "a"}], ["body", "labels", 0, "row"], "past the last row"),
        ([{"row": 1, "label": "a"}, {"row": 1, "label": "b"}], ["body", "labels", 1, "row"], "labelled twice"),
    ],
)
def test_labels_that_do_not_fit_the_dataset_are_a_422(client, dataset, labels, loc, message):
    response = client.post(f"/v1/datasets/{dataset['id']}/labels", json={"labels": labels})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == loc and message in response.json()["detail"]
    assert len(client.get(f"/v1/datasets/{dataset['id']}/versions").json()) == 1


def test_malformed_labels_are_a_422_and_unknown_datasets_a_404(client, dataset):
    assert client.post(f"/v1/datasets/{dataset['id']}/labels", json={"labels": []}).status_code == 422
    assert client.post(f"/v1/datasets/{dataset['id']}/labels",
                       json={"labels": [{"row": 1, "label": ""}]}).status_code == 422
    assert client.post(f"/v1/datasets/{dataset['id']}/labels",
                       json={"labels": [{"row": "1", "label": "a"}]}).status_code == 422
    assert client.post("/v1/datasets/nope/labels", json={"labels": [{"row": 1, "label": "a"}]}).status_code == 404


def test_a_revised_file_uploads_as_the_next_version(client, dataset, tmp_path):
    path = tmp_path / "revised.csv"
    path.write_text("text,label\nhello,a\nbye,b\n", encoding="utf-8")
    with path.open("rb") as handle:
        response = client.post(f"/v1/datasets/{dataset['id']}/versions", files={"file": (path.name, handle)})
    assert response.status_code == 201, response.text
    version = response.json()
    assert (version["version"], version["parent_id"], version["name"]) == (2, dataset["id"], "pool")
    assert version["num_rows"] == 2 and version["num_labelled"] == 2


def test_suggestion_requests_are_checked_then_queued(client, dataset, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    route = f"/v1/datasets/{dataset['id']}/suggest-labels"
    response = client.post(route, params={"n": 0}, json={"model_id": model_id})
    assert response.status_code == 422 and response.json()["errors"][0]["loc"] == ["query", "n"]
    response = client.post(route, json={"model_id": "nope"})
    assert response.status_code == 422 and response.json()["errors"][0]["loc"] == ["body", "model_id"]
    assert client.post("/v1/datasets/nope/suggest-labels", json={"model_id": model_id}).status_code == 404

    response = client.post(route, params={"n": 3}, json={"model_id": model_id})
    assert response.status_code == 202, response.text
    suggestion = response.json()
    assert (suggestion["status"], suggestion["n"], suggestion["rows"]) == ("queued", 3, [])
    again = client.get(f"{route}/{suggestion['id']}")
    assert again.status_code == 200 and again.json()["id"] == suggestion["id"]
    assert client.get(f"/v1/datasets/{dataset['id']}/suggest-labels/nope").status_code == 404


def test_a_fully_labelled_dataset_has_nothing_to_suggest(client, tiny_encoder_zip, tmp_path):
    path = tmp_path / "done.jsonl"
    path.write_text('{"text": "one", "label": "a"}\n{"text": "two", "label": "b"}\n', encoding="utf-8")
    dataset_id = upload(client, path, route="/v1/datasets").json()["id"]
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    response = client.post(f"/v1/datasets/{dataset_id}/suggest-labels", json={"model_id": model_id})
    assert response.status_code == 422 and "labelled already" in response.json()["detail"]
