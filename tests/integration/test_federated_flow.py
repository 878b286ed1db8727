"""A federated recovery end to end, every part a real process on Postgres and Redis: the API, a cpu worker
that runs the job (and Flower's coordinator), and two site workers (`compresso worker --site NAME`), each
with its own site data folder, whose datasets were registered with `compresso site add-dataset`.

The sites' rows must not leave them: no file of the central storage, and no row of the database, holds a
word of them; the job's report has only what Flower carried back (weights, counts and losses).
"""

import json
import os
import subprocess
import sys

import psycopg
import pytest

from tests.archives import zip_folder
from tests.conftest import DATA_DIR, POSTGRES_ADMIN_URL, TEST_DATABASE
from tests.factories import build_tiny_model
from tests.integration import harness

SITES = ("north", "south")
# Words that appear only in the sites' rows, so finding one anywhere central means a row leaked.
SECRET_WORDS = {"north": "quillmarrow", "south": "vextorpine"}
FAST_EVALUATION = {
    "max_samples": 16, "sequence_length": 32, "batch_size": 16, "latency_warmup": 1, "latency_repeats": 2,
    "latency_batch_sizes": [1], "energy_repeats": 2, "energy_batch_size": 8, "energy_inferences_per_run": 8,
}


@pytest.fixture(scope="module")
def service(database, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    with harness.distributed_service(logs) as client:
        yield client, logs


def register_site_dataset(base_url: str, site: str, site_dir, tmp_path) -> str:
    path = tmp_path / f"{site}-notes.jsonl"
    rows = [{"text": f"patient {row} {SECRET_WORDS[site]} said the team and the film were fast"} for row in range(24)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    env = {**os.environ, "COMPRESSO_URL": base_url, "COMPRESSO_SITE_DATA_DIR": str(site_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "site", "add-dataset", str(path), "--site", site], cwd=harness.ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    path.unlink()  # only the site's own copy is left
    return result.stdout.strip()


def central_text() -> str:
    """Every value of every table of the service's database, as text."""
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{TEST_DATABASE}"
    chunks = []
    with psycopg.connect(url) as connection:
        tables = [row[0] for row in connection.execute(
            "select tablename from pg_tables where schemaname = 'public'").fetchall()]
        for table in tables:
            chunks += [str(row) for row in connection.execute(f'select * from "{table}"').fetchall()]
    return "\n".join(chunks)


def test_a_federated_recovery_trains_at_two_sites_whose_rows_never_leave_them(service, tmp_path):
    client, logs = service
    site_dirs = {site: tmp_path / f"site-{site}" for site in SITES}
    workers = [
        harness.start(harness.compresso("worker", "--site", site),
                      {**os.environ, "COMPRESSO_SITE_DATA_DIR": str(site_dirs[site])}, logs / f"worker-{site}.log")
        for site in SITES
    ]
    try:
        datasets = {site: register_site_dataset(str(client.base_url), site, site_dirs[site], tmp_path) for site in SITES}
        model_dir = build_tiny_model("encoder", tmp_path / "encoder", hidden_size=32)
        model = harness.upload(client, "/v1/models", zip_folder(model_dir, tmp_path / "encoder.zip"), "encoder")
        recipe = {"steps": [
            {"technique": "prune", "params": {"structure": "unstructured", "sparsity": 0.5}},
            {"technique": "federated", "params": {
                "sites": [{"site": site, "dataset_id": datasets[site]} for site in SITES],
                "rounds": 2, "local_steps": 8, "batch_size": 8, "lr": 3e-3, "connect_timeout_s": 180,
            }},
        ]}
        response = client.post("/v1/jobs", json={
            "model_id": model["id"], "recipe": recipe, "device": "cpu", "evaluation": FAST_EVALUATION,
        })
        assert response.status_code == 202, response.text
        job = harness.wait_for_status(client, response.json()["id"], {"succeeded", "failed"}, timeout=420)
        assert job["status"] == "succeeded", job.get("error")
    finally:
        for worker in workers:
            harness.stop(worker)

    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    prune, federated = report["steps"]
    details = federated["details"]
    assert details["rounds_completed"] == 2 and details["dropped"] == []
    assert details["sites_in_last_round"] == list(SITES)
    assert details["examples_per_site"] == {site: 24 for site in SITES}
    assert details["bytes_received_from_sites"] > 0
    assert federated["placement"] == {"training": "sites (cpu)", "aggregation": "cpu"}
    assert prune["technique"] == "prune"
    for site in SITES:
        rounds = [record["loss_after"][site] < record["loss_before"][site] for record in details["rounds"]]
        assert all(rounds), details["rounds"]

    # Each site's worker ran its part: its log names the job and the rounds it trained.
    for site in SITES:
        assert f"site {site} trained rounds [1, 2]" in (logs / f"worker-{site}.log").read_text()

    # Not a word of the sites' rows reached the central storage (the result and report included) or the database.
    central_files = [path for path in (DATA_DIR / "storage").rglob("*") if path.is_file()]
    assert any(path.name == "report.json" for path in central_files)
    text = central_text()
    assert datasets["north"] in text  # the registration is there: metadata and hash
    for word in SECRET_WORDS.values():
        assert word not in text
        for path in central_files:
            assert word.encode() not in path.read_bytes(), path
