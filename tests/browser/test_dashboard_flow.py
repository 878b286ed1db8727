"""The dashboard used as a person would: upload, build a recipe, watch the job, download the result."""

import base64
import json
import os
import re
import zipfile
from pathlib import Path

import httpx
import pytest
import yaml

from tests.archives import zip_folder
from tests.factories import build_tiny_model

SLICES = ("news", "chat")


@pytest.fixture(scope="module")
def model_zip(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model")
    return zip_folder(build_tiny_model("encoder", root / "model", hidden_size=64), root / "tiny-encoder.zip")


@pytest.fixture(scope="module")
def dataset_jsonl(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dataset") / "sentences.jsonl"
    rows = [{"text": f"sentence number {i} about the {SLICES[i % 2]}", "slice": SLICES[i % 2]} for i in range(24)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def upload_through_the_page(page, path: str, file: Path, name: str) -> None:
    page.goto(path)
    page.get_by_label("File", exact=True).set_input_files(file)
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_role("button", name="Upload").click()
    page.get_by_role("status").filter(has_text=f"Uploaded {name}.").wait_for()
    page.locator("#items tbody tr", has_text=name).wait_for()


def choose(page, label: str, text: str) -> None:
    select = page.get_by_label(label)
    select.select_option(select.locator("option", has_text=re.compile(f"^{re.escape(text)} ")).get_attribute("value"))


def test_upload_build_submit_watch_and_download(page, model_zip, dataset_jsonl, tmp_path, screenshots):
    upload_through_the_page(page, "/models", model_zip, "tiny-encoder")
    row = page.locator("#items tbody tr", has_text="tiny-encoder")
    assert "BertModel" in row.inner_text()
    page.screenshot(path=screenshots / "models.png")

    upload_through_the_page(page, "/datasets", dataset_jsonl, "sentences")
    assert "slice" in page.locator("#items tbody tr", has_text="sentences").inner_text()

    page.goto("/jobs/new")
    page.locator("#job-form[data-ready=true]").wait_for()
    choose(page, "Model (required)", "tiny-encoder")
    choose(page, "Evaluation dataset (optional)", "sentences")
    page.get_by_label("Device").select_option("cpu")
    page.get_by_label("Job name (optional)").fill("browser-svd-int8")
    page.get_by_label("Technique", exact=True).select_option("quantize")
    page.get_by_role("button", name="Add step").click()
    page.get_by_label("Technique", exact=True).select_option("low_rank")
    page.get_by_role("button", name="Add step").click()
    # quantize ends in ONNX, so it must be last: move low_rank up with the builder's own button.
    page.get_by_role("button", name="Move step 2 up").click()
    page.locator("#step-1-scheme").select_option("int8_dynamic")
    page.get_by_label("ffn_output").check()
    recipe_text = page.get_by_label(re.compile("Recipe as text"))
    recipe = json.loads(recipe_text.input_value())
    assert recipe == {"steps": [
        {"technique": "low_rank", "params": {"energy": 0.99}},
        {"technique": "quantize", "params": {"scheme": "int8_dynamic", "keep_fp32": ["ffn_output"]}},
    ]}

    # The same recipe as YAML; an edit there reaches the builder's fields.
    page.get_by_label("YAML").check()
    assert yaml.safe_load(recipe_text.input_value()) == recipe
    assert "- technique: low_rank" in recipe_text.input_value()
    recipe_text.fill(recipe_text.input_value().replace("energy: 0.99", "rank_fraction: 0.25"))
    assert page.locator("#step-0-rank_fraction").input_value() == "0.25"
    assert page.locator("#step-0-energy").input_value() == ""
    recipe_text.fill("steps: [oops")
    assert "Not valid YAML yet" in page.locator("#recipe-text-error").inner_text()
    page.get_by_label("JSON").check()  # rewritten from the last recipe that parsed
    assert json.loads(recipe_text.input_value())["steps"][0]["params"] == {"rank_fraction": 0.25}

    page.get_by_label("ffn_output").uncheck()
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=screenshots / "new_job.png")
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]+$"))

    # The page follows the job by itself and reloads once when it has finished.
    page.locator("#status", has_text="succeeded").wait_for(timeout=180_000)
    page.locator("#charts-heading").wait_for()
    assert page.locator("#steps .step-state").all_inner_texts() == ["done", "done"]
    log = page.locator("#log").inner_text()
    assert "step 1/2: low_rank" in log and "step 2/2: quantize" in log
    assert re.search(r"low_rank: factorised [1-9]\d* layers", log)
    assert "succeeded: the model and report are stored" in log
    assert page.locator("svg.chart").count() >= 4
    assert page.locator("svg.chart [data-series]").count() > 0
    page.screenshot(path=screenshots / "job.png", full_page=True)

    with page.expect_download() as download_info:
        page.get_by_role("link", name="model.zip").click()
    archive = tmp_path / "model.zip"
    download_info.value.save_as(archive)
    with zipfile.ZipFile(archive) as zipped:
        assert "model.onnx" in zipped.namelist()

    page.goto("/")
    page.locator("tr", has_text="browser-svd-int8").locator(".status-succeeded").wait_for()
    page.screenshot(path=screenshots / "overview.png")

    page.goto("/datasets")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete sentences").click()
    page.get_by_role("status").filter(has_text="Deleted sentences.").wait_for()
    page.locator("#items tbody tr", has_text="sentences").wait_for(state="detached")


def test_a_dropped_file_is_uploaded(page, model_zip):
    page.goto("/models")
    payload = base64.b64encode(model_zip.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """([name, payload]) => {
            const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "application/zip" }));
            return transfer;
        }""",
        [model_zip.name, payload],
    )
    page.dispatch_event("[data-dropzone]", "drop", {"dataTransfer": transfer})
    page.get_by_role("status").filter(has_text=f"Chosen: {model_zip.name}.").wait_for()
    page.get_by_label("Name", exact=True).fill("dropped-model")
    page.get_by_role("button", name="Upload").click()
    page.get_by_role("status").filter(has_text="Uploaded dropped-model.").wait_for()
    page.locator("#items tbody tr", has_text="dropped-model").wait_for()


def test_an_upload_is_cancelled_midway(page, server, tmp_path):
    big = tmp_path / "big-model.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as zipped:
        zipped.writestr("model/model.safetensors", os.urandom(8 << 20))
    # Chromium's own network throttling slows the upload to 512 KB/s, so a click lands mid-way.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions",
             {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 512 * 1024})
    page.goto("/models")
    page.get_by_label("File", exact=True).set_input_files(big)
    page.get_by_label("Name", exact=True).fill("cancel-me")
    page.get_by_role("button", name="Upload").click()
    page.wait_for_function("document.getElementById('upload-progress').value > 0.05")
    page.get_by_role("button", name="Cancel upload").click()
    page.get_by_role("status").filter(has_text="Upload cancelled.").wait_for()
    assert page.locator("#upload-progress").evaluate("element => element.value") == 0
    assert page.get_by_role("button", name="Cancel upload").is_hidden()
    with httpx.Client(base_url=server[0], timeout=30) as client:
        assert "cancel-me" not in [model["name"] for model in client.get("/v1/models").json()["items"]]


def test_a_rejected_upload_shows_the_server_reason(page, tmp_path):
    not_a_model = tmp_path / "notes.zip"
    with zipfile.ZipFile(not_a_model, "w") as zipped:
        zipped.writestr("notes/readme.txt", "no config.json here")
    page.goto("/models")
    page.get_by_label("File", exact=True).set_input_files(not_a_model)
    page.get_by_role("button", name="Upload").click()
    alert = page.get_by_role("alert").filter(has_text="Upload refused")
    alert.wait_for()
    assert "config.json" in alert.inner_text()


def a_model(client: httpx.Client, model_zip: Path) -> dict:
    models = client.get("/v1/models").json()["items"]
    if models:
        return models[0]
    with model_zip.open("rb") as handle:
        return client.post("/v1/models", files={"file": (model_zip.name, handle)}, data={"name": "tiny"}).json()


def test_a_refused_recipe_shows_each_error_beside_its_field(page, server, model_zip):
    with httpx.Client(base_url=server[0], timeout=30) as client:
        model = a_model(client, model_zip)
    page.goto("/jobs/new")
    page.locator("#job-form[data-ready=true]").wait_for()
    page.get_by_label("Model (required)").select_option(model["id"])
    page.get_by_label(re.compile("Recipe as text")).fill(
        json.dumps({"steps": [{"technique": "quantize", "params": {"scheme": "int4", "per_channel": True}}]}))
    assert page.locator("#step-0-per_channel").is_checked()  # the builder followed the textarea
    page.get_by_role("button", name="Submit job").click()
    page.get_by_role("alert").filter(has_text="Invalid recipe").wait_for()
    assert "int8_dynamic" in page.locator("#step-0-scheme-error").inner_text()
    assert page.locator("#step-0-scheme").get_attribute("aria-invalid") == "true"
    assert page.url.endswith("/jobs/new")


def submit_a_slow_job(base_url: str, model_zip: Path, name: str) -> str:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        model = a_model(client, model_zip)
        submitted = client.post("/v1/jobs", json={
            "model_id": model["id"],
            "name": name,
            "recipe": {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]},
            "evaluation": {"latency_repeats": 10000, "latency_batch_sizes": [32]},
        })
        assert submitted.status_code == 202, submitted.text
        return submitted.json()["id"]


def test_a_running_job_is_cancelled_from_its_page(page, server, model_zip):
    job_id = submit_a_slow_job(server[0], model_zip, "slow-one")
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"/jobs/{job_id}")
    page.get_by_role("button", name="Cancel job").click()
    page.locator("#status", has_text="cancelled").wait_for(timeout=60_000)
    # Cancelled while queued (the API says so) or while running (the worker does).
    page.locator("#log", has_text=re.compile("cancelled before it started|cancelled on request")).wait_for()


def test_a_job_is_cancelled_from_the_list(page, server, model_zip):
    job_id = submit_a_slow_job(server[0], model_zip, "slow-two")
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto("/")
    page.get_by_role("button", name="Cancel slow-two").click()
    page.locator(f'tr[data-job-id="{job_id}"] .status-cancelled').wait_for(timeout=60_000)
    assert page.get_by_role("button", name="Cancel slow-two").count() == 0


def test_a_goal_from_the_form_searches_and_a_candidate_runs_again(page, model_zip, tmp_path):
    dataset = tmp_path / "goal.jsonl"
    dataset.write_text("".join(json.dumps({"text": f"sentence {i} about the {SLICES[i % 2]}"}) + "\n" for i in range(40)))
    upload_through_the_page(page, "/models", model_zip, "goal-encoder")
    upload_through_the_page(page, "/datasets", dataset, "goal-sentences")
    page.goto("/jobs/new")
    page.locator("#job-form[data-ready=true]").wait_for()
    # The preset buttons come from the API; picking one fills the recipe and its target.
    page.get_by_role("button", name="int8-packed").click()
    steps = json.loads(page.get_by_label(re.compile("Recipe as text")).input_value())["steps"]
    assert [step["technique"] for step in steps] == ["quantize", "huffman"]

    choose(page, "Model (required)", "goal-encoder")
    choose(page, "Evaluation dataset (optional)", "goal-sentences")
    page.get_by_label("Device").select_option("cpu")
    page.get_by_label("A goal: compresso searches").check()
    assert page.locator("#recipe-builder").is_hidden()
    page.get_by_label("Fidelity at least").fill("0.99")
    page.get_by_label("Candidates at most").fill("3")
    page.get_by_label("Budget (minutes for the whole job)").fill("5")
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]+$"))
    assert "min_fidelity 0.99" in page.locator("#goal").inner_text()
    assert "20 rows to search, 20 held out" in page.locator("#preflight").inner_text()

    page.locator("#status", has_text="succeeded").wait_for(timeout=180_000)
    page.locator("#search-heading").wait_for()
    assert page.locator("#candidates tbody tr").count() == 3
    assert page.locator("svg.chart-search-front [data-series=chosen]").count() == 1
    goal_job_url = page.url
    page.get_by_role("button", name="Run candidate 1 as a job").click()
    page.wait_for_url(lambda url: url != goal_job_url and re.search(r"/jobs/[0-9a-f-]+$", url) is not None)
    page.locator("#status", has_text="succeeded").wait_for(timeout=180_000)
    assert page.locator("#goal").count() == 0
