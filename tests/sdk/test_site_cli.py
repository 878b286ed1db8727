"""`compresso site add-dataset` on a site's host, as a real process against a real `compresso serve`: the
file is checked and kept under COMPRESSO_SITE_DATA_DIR, only its metadata reaches the server, and a copy
that nothing registered is removed again."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from compresso import Client
from tests.integration.harness import ROOT, free_port

SITE = "clinic-a"


def add_dataset(server_url: str, site_data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("COMPRESSO_")}
    env.update(COMPRESSO_URL=server_url, COMPRESSO_SITE_DATA_DIR=str(site_data_dir))
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "site", "add-dataset", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )


def kept_files(site_data_dir: Path) -> list[Path]:
    return sorted(path for path in site_data_dir.rglob("*") if path.is_file())


def test_add_dataset_keeps_the_file_at_the_site_and_registers_its_metadata(server_url, dataset_file, tmp_path):
    sites = tmp_path / "sites"
    result = add_dataset(server_url, sites, str(dataset_file), "--site", SITE, "--name", "ward notes", "--json")
    assert result.returncode == 0, result.stderr
    dataset = json.loads(result.stdout)
    sha256 = hashlib.sha256(dataset_file.read_bytes()).hexdigest()
    assert (dataset["site"], dataset["name"], dataset["sha256"]) == (SITE, "ward notes", sha256)
    assert (dataset["num_rows"], dataset["columns"], dataset["filename"]) == (24, ["text", "slice"], "sentences.jsonl")
    kept = sites / SITE / "datasets" / f"{sha256}.jsonl"
    assert kept_files(sites) == [kept] and kept.read_bytes() == dataset_file.read_bytes()

    with Client(server_url) as client:
        assert client.dataset(dataset["id"]).site == SITE
        [site] = [site for site in client.sites() if site.site == SITE]
        assert (site.queue, site.datasets >= 1) == (f"site.{SITE}", True)

    # Without --json: the new id alone on stdout, for scripts.
    again = add_dataset(server_url, sites, str(dataset_file), "--site", SITE)
    assert again.returncode == 0, again.stderr
    assert len(again.stdout.strip()) == 32 and again.stdout.strip() != dataset["id"]
    assert kept_files(sites) == [kept]  # one copy per content


def test_a_file_that_fails_the_checks_is_refused_and_not_kept(server_url, tmp_path):
    sites = tmp_path / "sites"
    bad = tmp_path / "no-text.jsonl"
    bad.write_text('{"label": "a"}\n', encoding="utf-8")
    result = add_dataset(server_url, sites, str(bad), "--site", SITE)
    assert result.returncode == 2 and "'text'" in result.stderr
    assert kept_files(sites) == []
    result = add_dataset(server_url, sites, str(bad), "--site", "Clinic_A")
    assert result.returncode == 2 and "lowercase letters" in result.stderr


def test_a_copy_the_server_did_not_register_is_removed_unless_another_dataset_uses_it(
    server_url, dataset_file, tmp_path
):
    sites, unreachable = tmp_path / "sites", f"http://127.0.0.1:{free_port()}"
    result = add_dataset(unreachable, sites, str(dataset_file), "--site", SITE)
    assert result.returncode == 4, result.stderr
    assert kept_files(sites) == []

    assert add_dataset(server_url, sites, str(dataset_file), "--site", SITE).returncode == 0
    [kept] = kept_files(sites)
    assert add_dataset(unreachable, sites, str(dataset_file), "--site", SITE).returncode == 4
    assert kept_files(sites) == [kept]  # the registered dataset still reads it
