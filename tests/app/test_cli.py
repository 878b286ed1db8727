"""The `compresso` command refuses bad settings at start, with the setting's name."""

import os
import subprocess
import sys


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def test_worker_refuses_an_unknown_grid_country():
    result = run_cli("worker", COMPRESSO_CARBON_COUNTRY="XYZ")
    assert result.returncode != 0
    assert "COMPRESSO_CARBON_COUNTRY" in result.stderr and "XYZ" in result.stderr


def test_worker_refuses_a_negative_wue_and_a_zero_hardware_lifetime():
    result = run_cli("worker", COMPRESSO_WUE_L_PER_KWH="-1")
    assert result.returncode != 0
    assert "COMPRESSO_WUE_L_PER_KWH" in result.stderr and "greater than or equal to 0" in result.stderr
    result = run_cli("worker", COMPRESSO_HARDWARE_LIFETIME_YEARS="0")
    assert result.returncode != 0
    assert "COMPRESSO_HARDWARE_LIFETIME_YEARS" in result.stderr and "greater than 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_refuses_an_unknown_queue():
    result = run_cli("worker", "--queues", "tpu")
    assert result.returncode == 2
    assert "allowed: cpu, gpu" in result.stderr


def test_a_site_worker_consumes_its_sites_queue():
    from app.cli import worker_queues

    assert worker_queues(None, None) == "cpu"
    assert worker_queues(None, "clinic-a") == "site.clinic-a"
    assert worker_queues("cpu,webhooks", "clinic-a") == "cpu,webhooks,site.clinic-a"
    # What a gpu supervisor passes back to the workers it starts, one per GPU.
    assert worker_queues("gpu,site.clinic-a", None) == "gpu,site.clinic-a"
    assert worker_queues("site.clinic-a", "clinic-a") == "site.clinic-a"


def test_worker_refuses_a_bad_site_name():
    result = run_cli("worker", "--site", "Clinic_A")
    assert result.returncode == 2
    assert "lowercase letters, digits or '-'" in result.stderr
    result = run_cli("worker", "--queues", "site.Clinic_A")
    assert result.returncode == 2 and "unknown queue(s) site.Clinic_A" in result.stderr
