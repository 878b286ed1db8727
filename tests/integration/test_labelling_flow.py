"""Active learning for the user's labels, end to end on the embedded service with its real worker: ask
which rows to label, label them into a new dataset version, then fine-tune a classifier on that version
and compress it, with the job recording the version it used."""

import json
import time

import httpx

from tests.archives import zip_folder
from tests.factories import build_tiny_model
from tests.integration import harness

TOPICS = {"money": "bank price rate order", "sport": "team game run fast", "media": "book film phone model"}


def pool_rows() -> list[dict]:
    rows = []
    for index in range(36):
        topic = sorted(TOPICS)[index % 3]
        words = TOPICS[topic].split()
        text = f"the {words[index % 4]} and {words[(index + 1) % 4]} of it {index}"
        rows.append({"text": text, "label": topic} if index < 12 else {"text": text, "topic": topic})
    return rows


def wait_for_suggestion(client: httpx.Client, route: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        suggestion = client.get(route).json()
        if suggestion["status"] in ("succeeded", "failed"):
            return suggestion
        time.sleep(0.5)
    raise AssertionError(f"suggestion {route} still {suggestion['status']} after {timeout}s")


def test_suggest_label_then_finetune_the_new_version(tmp_path):
    rows = pool_rows()
    truth = {index: row.pop("topic") for index, row in enumerate(rows) if "topic" in row}
    dataset_path = tmp_path / "pool.jsonl"
    dataset_path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    model_zip = zip_folder(build_tiny_model("encoder", tmp_path / "encoder"), tmp_path / "encoder.zip")
    with harness.embedded_server(tmp_path) as server, httpx.Client(base_url=server.base_url, timeout=30) as client:
        model = harness.upload(client, "/v1/models", model_zip, "encoder")
        dataset = harness.upload(client, "/v1/datasets", dataset_path, "pool")
        asked = client.post(f"/v1/datasets/{dataset['id']}/suggest-labels", params={"n": 6},
                            json={"model_id": model["id"]})
        assert asked.status_code == 202, asked.text
        suggestion = wait_for_suggestion(client, f"/v1/datasets/{dataset['id']}/suggest-labels/{asked.json()['id']}")
        assert suggestion["status"] == "succeeded", (suggestion, server.log.read_text()[-4000:])
        assert suggestion["method"] == "probe" and suggestion["classes"] == ["media", "money", "sport"]
        picked = [item["row"] for item in suggestion["rows"]]
        assert len(set(picked)) == 6 and set(picked) <= set(truth)

        labelled = client.post(f"/v1/datasets/{dataset['id']}/labels",
                               json={"labels": [{"row": row, "label": truth[row]} for row in picked]})
        assert labelled.status_code == 201, labelled.text
        version = labelled.json()
        assert (version["version"], version["num_labelled"]) == (2, 18)

        recipe = {"steps": [
            {"technique": "finetune", "params": {"lr": 3e-3, "epochs": 6, "batch_size": 8, "heldout_fraction": 0.25}},
            {"technique": "quantize", "params": {"scheme": "int8_dynamic"}},
        ]}
        submitted = client.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": version["id"], "recipe": recipe})
        assert submitted.status_code == 202, submitted.text
        job = harness.wait_for_status(client, submitted.json()["id"], harness.FINISHED)
        assert job["status"] == "succeeded", (job, server.log.read_text()[-4000:])
        assert job["dataset_id"] == version["id"]
        report = client.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["model"]["task"] == "text-classification"
    finetune = report["steps"][0]["details"]
    assert (finetune["labelled_rows"], finetune["heldout_rows"], finetune["training_rows"]) == (18, 4, 14)
    assert report["fidelity"]["reference"] == "step 1 (finetune)"
