"""The dashboard's labelling page: ask for suggestions, see them while a worker chooses, label the rows one
click each, and save them as the dataset's next version; refused forms come back with the reason."""

import json

import pytest

from tests.app.conftest import client, tiny_encoder_dir, tiny_encoder_zip, upload  # noqa: F401 - shared fixtures

ROWS = [{"text": "<b>bold</b> row", "label": "a"}, {"text": "second row", "label": "b"},
        {"text": "third row"}, {"text": "fourth row"}]


@pytest.fixture
def dataset_and_model(client, tiny_encoder_zip, tmp_path):  # noqa: F811
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    dataset = upload(client, path, name="pool", route="/v1/datasets").json()
    model = upload(client, tiny_encoder_zip).json()
    return dataset, model


def finish_suggestion(suggestion_id: str, rows: list[int]) -> None:
    """What the worker writes when it has chosen (its own run is tested in tests/integration)."""
    from app.datasets import repository
    from app.db.session import session_scope

    with session_scope() as session:
        suggestion = repository.get_suggestion(session, suggestion_id)
        suggestion.status = "succeeded"
        suggestion.result = {"method": "probe", "labelled_rows": 2, "unlabelled_rows": 2, "classes": ["a", "b"],
                             "rows": [{"row": row, "text": ROWS[row]["text"], "uncertainty": 0.5, "predicted": "b"}
                                      for row in rows]}


def test_suggest_then_label_rows_into_a_new_version(client, dataset_and_model):  # noqa: F811
    dataset, model = dataset_and_model
    page = client.get(f"/datasets/{dataset['id']}/label")
    assert page.status_code == 200
    assert f'<option value="{model["id"]}">' in page.text and "Suggest rows to label" in page.text
    assert "&lt;b&gt;" not in page.text  # no rows shown before a suggestion

    asked = client.post(f"/datasets/{dataset['id']}/suggest", data={"model_id": model["id"], "n": "2"},
                        follow_redirects=False)
    assert asked.status_code == 303
    suggestion_id = asked.headers["location"].split("suggestion=")[1]
    waiting = client.get(asked.headers["location"])
    assert "Choosing 2 rows (queued)" in waiting.text and 'http-equiv="refresh"' in waiting.text

    finish_suggestion(suggestion_id, [2, 3])
    ready = client.get(asked.headers["location"]).text
    assert 'http-equiv="refresh"' not in ready
    assert ready.count('type="radio" name="label-2"') == 2 and 'name="new-3"' in ready
    assert "(guess)" in ready and "Save labels as version 2" in ready

    saved = client.post(f"/datasets/{dataset['id']}/label",
                        data={"suggestion": suggestion_id, "label-2": "a", "new-3": "c"}, follow_redirects=False)
    assert saved.status_code == 303
    new_page = client.get(saved.headers["location"])
    assert "Saved 2 label(s) as version 2" in new_page.text
    new_id = saved.headers["location"].split("/")[2]
    version = client.get(f"/v1/datasets/{new_id}").json()
    assert (version["version"], version["parent_id"], version["num_labelled"]) == (2, dataset["id"], 4)


def test_refused_forms_come_back_with_the_reason(client, dataset_and_model):  # noqa: F811
    dataset, model = dataset_and_model
    page = client.post(f"/datasets/{dataset['id']}/label", data={"label-2": "  "})
    assert page.status_code == 422 and "No row was labelled" in page.text
    page = client.post(f"/datasets/{dataset['id']}/suggest", data={"model_id": model["id"], "n": "0"})
    assert page.status_code == 422 and "n must be between 1 and 1000" in page.text
    assert len(client.get(f"/v1/datasets/{dataset['id']}/versions").json()) == 1


def test_suggested_text_is_escaped(client, dataset_and_model):  # noqa: F811
    dataset, model = dataset_and_model
    asked = client.post(f"/datasets/{dataset['id']}/suggest", data={"model_id": model["id"], "n": "1"},
                        follow_redirects=False)
    finish_suggestion(asked.headers["location"].split("suggestion=")[1], [0])
    page = client.get(asked.headers["location"]).text
    assert "&lt;b&gt;bold&lt;/b&gt; row" in page and "<b>bold</b>" not in page


def test_the_datasets_list_links_each_version_to_its_labelling_page(client, dataset_and_model):  # noqa: F811
    dataset, _ = dataset_and_model
    page = client.get("/datasets").text
    assert f'href="/datasets/{dataset["id"]}/label"' in page


def test_a_site_held_dataset_is_not_labelled_here_nor_offered_to_a_job(client):  # noqa: F811
    from tests.app.test_sites_api import register

    dataset = register(client, site="clinic-a").json()
    page = client.post(f"/datasets/{dataset['id']}/label", data={"label-0": "a"})
    assert page.status_code == 409 and "held by site &#39;clinic-a&#39;, not here" in page.text
    page = client.post(f"/datasets/{dataset['id']}/suggest", data={"model_id": "any", "n": "5"})
    assert page.status_code == 409 and "cannot be embedded for label suggestions" in page.text
    assert dataset["id"] not in client.get("/jobs/new").text
