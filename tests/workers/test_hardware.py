"""What a worker says about its own hardware, and what its jobs get when Boavizta cannot run."""

import os

import pytest

from app.config import Settings
from workers import gpus, hardware


def test_the_spec_is_what_this_process_may_use(monkeypatch):
    monkeypatch.delenv(gpus.PINNED_GPU, raising=False)
    monkeypatch.delenv(hardware.GPU_WORKERS_ON_HOST, raising=False)
    monkeypatch.setenv(hardware.JOBS_AT_ONCE, "3")
    spec = hardware.machine_spec()
    assert spec.visible_threads == len(os.sched_getaffinity(0))
    assert 0 < spec.ram_gb <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3 + 0.1
    assert spec.gpus == []  # a cpu worker holds no GPU
    assert spec.jobs_sharing_host == 3
    monkeypatch.setenv(hardware.GPU_WORKERS_ON_HOST, "4")  # pinned gpu workers share the host's CPU and RAM
    assert hardware.machine_spec().jobs_sharing_host == 4


def test_a_probe_that_cannot_run_leaves_the_reason_for_every_job(tmp_path):
    probe = hardware._Probe()
    probe.run(Settings(boavizta_python=tmp_path / "missing" / "python"))
    assert probe.done.is_set() and probe.footprint is None
    assert "could not compute its hardware footprint" in probe.error and "make install" in probe.error


def test_the_probe_runs_the_isolated_interpreter(tmp_path):
    probe = hardware._Probe()
    probe.run(Settings(hardware_lifetime_years=5, cpu_model="Intel Xeon Platinum 8480+"))
    assert probe.error is None, probe.error
    assert probe.footprint.lifetime_hours == pytest.approx(5 * 8760)
    assert probe.footprint.lifetime_source == "COMPRESSO_HARDWARE_LIFETIME_YEARS"
    assert {component.component for component in probe.footprint.components} >= {"cpu", "ram"}
    # The operator's CPU model, not CodeCarbon's detection, is what Boavizta matched.
    [cpu] = [component for component in probe.footprint.components if component.component == "cpu"]
    assert probe.footprint.spec.cpu_name == "Intel Xeon Platinum 8480+" and "8480" in cpu.assumptions["name"]
