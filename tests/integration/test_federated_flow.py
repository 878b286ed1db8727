"""A federated recovery end to end, every part a real process on Postgres and Redis: the API, a cpu worker
that runs the job (and Flower's coordinator, over TLS), and three site workers (`compresso worker --site
NAME`), each with its own site data folder, whose datasets were registered with `compresso site add-dataset`.
One site's worker is SIGKILLed once the first round is done: the rounds go on with the two others, and the
job finishes.

The sites' rows must not leave them: no file of the central storage, and no row of the database, holds a
word of them; the job's report has only what Flower carried back (weights, counts and losses).
"""

import json
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from tests.archives import zip_folder
from tests.conftest import DATA_DIR, POSTGRES_ADMIN_URL, TEST_DATABASE
from tests.factories import build_tiny_model
from tests.integration import harness
from tests.tls_certificates import write_tls_files

SITES = ("north", "south", "east")
KILLED = "east"
# Words that appear only in the sites' rows, so finding one anywhere central means a row leaked.
SECRET_WORDS = {"north": "quillmarrow", "south": "vextorpine", "east": "brondelwick"}
FAST_EVALUATION = {
    "max_samples": 16, "sequence_length": 32, "batch_size": 16, "latency_warmup": 1, "latency_repeats": 2,
    "latency_batch_sizes": [1], "energy_repeats": 2, "energy_batch_size": 8, "energy_inferences_per_run": 8,
}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict:
    return write_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def service(database, tmp_path_factory, tls_files):
    logs = tmp_path_factory.mktemp("logs")
    # The coordinator's worker presents a certificate for 127.0.0.1 that the test authority signed.
    tls = {"COMPRESSO_FEDERATED_TLS_CERT": str(tls_files["cert"]), "COMPRESSO_FEDERATED_TLS_KEY": str(tls_files["key"]),
           "COMPRESSO_FEDERATED_TLS_CA": str(tls_files["ca"])}
    with harness.distributed_service(logs, env=tls) as client:
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


def wait_for_log(client, job_id: str, text: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = client.get(f"/v1/jobs/{job_id}/logs", params={"limit": 1000}).json()["lines"]
        if any(text in line["message"] for line in lines):
            return
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("failed", "cancelled"):
            raise AssertionError(f"the job {job['status']} before a log line with {text!r}: {job.get('error')}")
        time.sleep(0.5)
    raise AssertionError(f"no log line with {text!r} in {timeout} s")


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


def test_a_federated_recovery_trains_at_two_sites_whose_rows_never_leave_them(service, tls_files, tmp_path):
    client, logs = service
    site_dirs = {site: tmp_path / f"site-{site}" for site in SITES}
    # Each site trusts the test authority and takes part over TLS only.
    site_tls = {"COMPRESSO_FEDERATED_TLS_CA": str(tls_files["ca"]), "COMPRESSO_FEDERATED_REQUIRE_TLS": "true"}
    workers = [
        harness.start(harness.compresso("worker", "--site", site),
                      {**os.environ, **site_tls, "COMPRESSO_SITE_DATA_DIR": str(site_dirs[site])},
                      logs / f"worker-{site}.log")
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
                "rounds": 3, "local_steps": 40, "batch_size": 8, "lr": 3e-3, "connect_timeout_s": 180,
                "min_sites_per_round": 2,
            }},
        ]}
        response = client.post("/v1/jobs", json={
            "model_id": model["id"], "recipe": recipe, "device": "cpu", "evaluation": FAST_EVALUATION,
        })
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        wait_for_log(client, job_id, "federated: waiting for 3 sites on port")
        waiting = [line["message"] for line in client.get(f"/v1/jobs/{job_id}/logs", params={"limit": 1000}).json()["lines"]
                   if "federated: waiting for 3 sites" in line["message"]]
        assert waiting[0].endswith("(TLS)"), waiting
        wait_for_log(client, job_id, "federated: round 1/3")
        harness.stop(workers[SITES.index(KILLED)], signal.SIGKILL)  # its Flower client dies with it
        job = harness.wait_for_status(client, job_id, {"succeeded", "failed"}, timeout=420)
        assert job["status"] == "succeeded", job.get("error")
    finally:
        for worker in workers:
            if worker.poll() is None:
                harness.stop(worker)

    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    prune, federated = report["steps"]
    details = federated["details"]
    kept = [site for site in SITES if site != KILLED]
    assert details["rounds_completed"] == 3 and details["dropped"] == [KILLED]
    assert details["rounds"][0]["sites"] == sorted(SITES)
    assert details["sites_in_last_round"] == sorted(kept)
    assert details["examples_per_site"] == {site: 24 for site in sorted(kept)}
    assert details["bytes_received_from_sites"] > 0
    # Every site measured its own rounds' energy (the killed one only until it died).
    assert all(details["site_energy"]["sites"][site]["energy_kwh"] > 0 for site in kept)
    # ... and the job's energy counts it: one stage per site, in the totals; so do water and embodied, from each
    # site's own WUE, grid and hardware (its worker's settings), which the job's worker does not know.
    site_stages = {stage["stage"]: stage for stage in report["energy"]["stages"] if stage["site"] is not None}
    assert set(site_stages) == {f"step_2.federated.site_{site}" for site in details["site_energy"]["sites"]}
    assert sum(stage["energy_kwh"] for stage in site_stages.values()) == pytest.approx(details["site_energy"]["energy_kwh"])
    assert report["energy"]["total"]["energy_kwh"] == pytest.approx(
        sum(stage["energy_kwh"] for stage in report["energy"]["stages"]))
    for section in ("water", "embodied"):
        assert report[section]["site_stages_left_out"] == [], section
        assert set(site_stages) <= {stage["stage"] for stage in report[section]["stages"]}, section
    for name, stage in site_stages.items():
        assert stage["site_impact"]["onsite_l"] > 0 and stage["site_impact"]["gwp_g"] > 0, name
    assert federated["placement"] == {"training": "sites (cpu)", "aggregation": "cpu"}
    assert prune["technique"] == "prune"
    for record in details["rounds"]:
        assert all(record["loss_after"][site] < record["loss_before"][site] for site in record["sites"]), record

    # Each site's worker that stayed ran its part: its log names the job and the rounds it trained.
    for site in kept:
        assert f"site {site} trained rounds [1, 2, 3]" in (logs / f"worker-{site}.log").read_text()

    # Not a word of the sites' rows reached the central storage (the result and report included) or the database.
    central_files = [path for path in (DATA_DIR / "storage").rglob("*") if path.is_file()]
    assert any(path.name == "report.json" for path in central_files)
    text = central_text()
    assert datasets["north"] in text  # the registration is there: metadata and hash
    for word in SECRET_WORDS.values():
        assert word not in text
        for path in central_files:
            assert word.encode() not in path.read_bytes(), path
