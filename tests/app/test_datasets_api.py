"""Dataset uploads through the API."""

import hashlib
import json

from tests.app.conftest import stored_files, upload


def test_upload_jsonl_dataset(client, tmp_path):
    path = tmp_path / "eval.jsonl"
    rows = [{"text": f"sentence {i}", "label": i % 2, "slice": "a" if i < 3 else "b"} for i in range(5)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    response = upload(client, path, name="eval", route="/v1/datasets")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["num_rows"] == 5
    assert set(body["columns"]) == {"text", "label", "slice"}
    assert body["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert client.get(f"/v1/datasets/{body['id']}").json()["name"] == "eval"
    assert len(client.get("/v1/datasets").json()["items"]) == 1
    assert client.delete(f"/v1/datasets/{body['id']}").status_code == 204
    assert stored_files() == []


def test_upload_csv_dataset(client, tmp_path):
    path = tmp_path / "eval.csv"
    path.write_text("text,text_pair,label\nhello,world,1\nbye,now,0\n")
    response = upload(client, path, route="/v1/datasets")
    assert response.status_code == 201, response.text
    assert response.json()["num_rows"] == 2


def test_dataset_without_text_column_is_refused(client, tmp_path):
    path = tmp_path / "eval.csv"
    path.write_text("sentence,label\nhello,1\n")
    response = upload(client, path, route="/v1/datasets")
    assert response.status_code == 422
    assert "text" in response.json()["detail"]
    assert stored_files() == []
    assert client.get("/v1/datasets").json()["items"] == []


def test_dataset_with_bad_json_line_is_refused(client, tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text('{"text": "ok"}\n{not json}\n')
    response = upload(client, path, route="/v1/datasets")
    assert response.status_code == 422
    assert "2" in response.json()["detail"]
    assert stored_files() == []
