"""The energy meter and the report's sustainability sections: stages add up, PUE and intensity are
applied once, and a failing CodeCarbon never fails the job."""

import math
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from tests.engine.conftest import FAST_EVAL, QUANTIZE_RECIPE
from workers.engine.energy import tracker as tracking
from workers.engine.energy.intensity import carbon_intensity
from workers.engine.energy.meter import open_meter
from workers.engine.energy.settings import EnergySettings
from workers.engine.errors import EngineUserError
from workers.engine.pipeline import PipelineRequest, run_pipeline
from workers.engine.recipe import Recipe

STAGES = ["load", "evaluate_original", "step_1.quantize", "package", "evaluate_result", "inference_energy"]
# Without powercap (this kind of machine) CodeCarbon can only estimate; with it, RAPL may measure the CPU.
NO_POWERCAP = not Path("/sys/class/powercap").exists()


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))


def _expected_method(components: dict) -> str:
    measured = {name for name, method in components.items() if method == "measured"}
    return "estimated" if not measured else "mixed"  # RAM is always estimated


def _assert_adds_up(energy: dict) -> None:
    intensity = energy["inputs"]["carbon_intensity_g_per_kwh"]
    for stage in [*energy["stages"], energy["total"]]:
        assert stage["energy_kwh"] == pytest.approx(stage["cpu_kwh"] + stage["gpu_kwh"] + stage["ram_kwh"], rel=1e-12)
        assert stage["co2e_g"] == pytest.approx(stage["energy_kwh"] * intensity, rel=1e-9)
    for field in ("duration_s", "cpu_kwh", "gpu_kwh", "ram_kwh", "energy_kwh", "co2e_g"):
        assert math.fsum(stage[field] for stage in energy["stages"]) == pytest.approx(energy["total"][field], rel=1e-12)


class FakeTracker:
    """Fixed readings per task (2 s, 1e-6 kWh CPU, 3e-6 kWh RAM); raises on the `fail_at`-th stop_task."""

    _hardware: list = []

    def __init__(self, fail_at: int | None = None):
        self.fail_at, self.stops, self.stopped = fail_at, 0, False

    def start_task(self, name: str) -> None:
        pass

    def stop_task(self, name: str) -> SimpleNamespace:
        self.stops += 1
        if self.stops == self.fail_at:
            raise RuntimeError("RAPL counter vanished")
        return SimpleNamespace(duration=2.0, cpu_energy=1e-6, gpu_energy=0.0, ram_energy=3e-6, ram_power=10.0)

    def get_detected_hardware(self) -> dict:
        return {"cpu_model": "Fake CPU", "gpu_count": 0, "gpu_model": ""}

    def stop(self) -> None:
        self.stopped = True


def _raise(*_args) -> None:
    raise RuntimeError("boom: no tracker today")


def test_stages_add_up_on_this_machines_estimated_path():
    with open_meter(EnergySettings(country="FRA", pue=1.5)) as meter:
        for stage in ("load", "evaluate_original"):
            meter.begin(stage)
            _busy(0.15)
            meter.end(stage)
        readings = []
        for _ in range(2):
            with meter.measure("run") as run:
                _busy(0.1)
            readings.append(run.reading)
        meter.record("inference_energy", readings)
        energy = meter.report().model_dump()

    assert energy["method"] == _expected_method(energy["inputs"]["components"]) and energy["error"] is None
    if NO_POWERCAP:
        assert energy["method"] == "estimated"
    assert [stage["stage"] for stage in energy["stages"]] == ["load", "evaluate_original", "inference_energy"]
    assert all(stage["energy_kwh"] > 0 and stage["method"] == energy["method"] for stage in energy["stages"])
    _assert_adds_up(energy)
    inputs = energy["inputs"]
    assert inputs["tracker"] == "codecarbon.OfflineEmissionsTracker" and inputs["tracking_mode"] == "process"
    assert (inputs["country"], inputs["carbon_intensity_g_per_kwh"], inputs["pue"]) == ("FRA", 56.039, 1.5)
    assert inputs["components"]["ram"] == "estimated" and inputs["ram_power_w"] > 0
    if inputs["components"]["cpu"] == "estimated":
        assert inputs["cpu_power_w"] > 0
        assert "CodeCarbon" in inputs["cpu_power_source"]
    # Estimated RAM energy is power x time, with the PUE applied once on top.
    load = energy["stages"][0]
    assert load["ram_kwh"] == pytest.approx(inputs["ram_power_w"] * load["duration_s"] * 1.5 / 3.6e6, rel=0.05)


def test_pue_and_carbon_intensity_are_applied_once(monkeypatch):
    monkeypatch.setattr(tracking, "make_tracker", lambda settings: FakeTracker())
    with open_meter(EnergySettings(country="DEU", pue=2.0)) as meter:
        meter.begin("load")
        meter.end("load")
        energy = meter.report()
    [stage] = energy.stages
    assert (stage.cpu_kwh, stage.gpu_kwh, stage.ram_kwh) == (2e-6, 0.0, 6e-6)
    assert stage.energy_kwh == pytest.approx(8e-6) and stage.duration_s == 2.0
    assert stage.co2e_g == pytest.approx(8e-6 * carbon_intensity("DEU")[0])
    assert energy.total.energy_kwh == stage.energy_kwh and energy.inputs.cpu_model == "Fake CPU"


def test_a_tracker_that_cannot_start_leaves_the_section_unavailable(monkeypatch):
    monkeypatch.setattr(tracking, "make_tracker", _raise)
    with open_meter(EnergySettings()) as meter:
        meter.begin("load")
        meter.end("load")
        with meter.measure("run") as run:
            pass
        energy = meter.report()
    assert run.reading is None
    assert energy.method == "unavailable" and "boom: no tracker today" in energy.error
    assert energy.stages == [] and energy.total.energy_kwh == 0.0 and energy.total.co2e_g == 0.0


def test_a_failure_mid_job_drops_every_stage_and_stops_the_tracker(monkeypatch):
    fake = FakeTracker(fail_at=2)
    monkeypatch.setattr(tracking, "make_tracker", lambda settings: fake)
    with open_meter(EnergySettings()) as meter:
        for stage in ("load", "evaluate_original", "package"):
            meter.begin(stage)
            meter.end(stage)
        energy = meter.report()
    assert energy.method == "unavailable" and "RAPL counter vanished" in energy.error
    assert energy.stages == [] and fake.stopped


def test_a_disabled_meter_builds_no_tracker(monkeypatch):
    monkeypatch.setattr(tracking, "make_tracker", _raise)
    with open_meter(EnergySettings(enabled=False)) as meter:
        meter.begin("load")
        meter.end("load")
        energy = meter.report()
    assert energy.method == "disabled" and energy.error is None and energy.stages == []


def test_country_codes_are_checked():
    assert carbon_intensity(None)[1].startswith("world average")
    assert carbon_intensity("FRA")[0] == 56.039
    assert EnergySettings(country="fra").country == "FRA"
    with pytest.raises(ValidationError):
        EnergySettings(country="FR")
    with pytest.raises(EngineUserError, match="ISO 3166-1 alpha-3"):
        carbon_intensity("XXA")


def test_an_unknown_country_fails_the_job_before_any_work(tiny_models, tmp_path):
    request = PipelineRequest(
        model_dir=tiny_models["encoder"], recipe=Recipe.from_dict(QUANTIZE_RECIPE), work_dir=tmp_path / "work",
        output_dir=tmp_path / "out", eval=FAST_EVAL, energy={"deployment_country": "XXA"},
    )
    with pytest.raises(EngineUserError, match="Unknown country code 'XXA'"):
        run_pipeline(request, lambda *_: None)
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


def test_the_report_has_the_three_sections_and_they_agree(pipeline_runs):
    report = pipeline_runs["encoder"].result.report
    energy, inference, payback = report["energy"], report["inference"], report["payback"]
    assert [stage["stage"] for stage in energy["stages"]] == STAGES
    assert energy["method"] == _expected_method(energy["inputs"]["components"])
    _assert_adds_up(energy)

    assert inference["method"] == energy["method"] and inference["error"] is None
    assert (inference["batch_size"], inference["inferences_per_run"], inference["batches_per_run"]) == (32, 64, 2)
    assert inference["repeats"] == FAST_EVAL["energy_repeats"] and inference["sequence_length"] == 128
    for side, runtime in (("original", "pytorch"), ("result", "onnxruntime")):
        figures = inference[side]
        assert figures["runtime"] == runtime and figures["device"] == "cpu"
        assert len(figures["runs"]) == len(figures["run_seconds"]) == FAST_EVAL["energy_repeats"]
        assert figures["kwh_per_1000_min"] <= figures["kwh_per_1000_mean"] <= figures["kwh_per_1000_max"]
        assert figures["kwh_per_1000_min"] > 0

    assert payback["job_energy_kwh"] == energy["total"]["energy_kwh"]
    assert payback["deployment"]["country"] is None and "world average" in payback["deployment"]["intensity_source"]
    assert payback["verdict"] in ("saves energy", "costs more energy", "no measurable saving")
    assert payback["difference_kwh_per_1000"] == pytest.approx(
        inference["original"]["kwh_per_1000_mean"] - inference["result"]["kwh_per_1000_mean"]
    )


@pytest.mark.parametrize("failure", ["at start", "mid-job"])
def test_the_job_succeeds_when_codecarbon_raises(tiny_models, tmp_path, monkeypatch, failure):
    monkeypatch.setattr(tracking, "make_tracker", _raise if failure == "at start" else lambda s: FakeTracker(fail_at=3))
    request = PipelineRequest(
        model_dir=tiny_models["encoder"], recipe=Recipe.from_dict(QUANTIZE_RECIPE), work_dir=tmp_path / "work",
        output_dir=tmp_path / "out", eval=FAST_EVAL | {"max_samples": 16},
    )
    result = run_pipeline(request, lambda *_: None)
    report = result.report
    assert report["energy"]["method"] == "unavailable" and report["energy"]["error"]
    assert report["energy"]["stages"] == [] and report["energy"]["total"]["energy_kwh"] == 0.0
    assert report["inference"]["method"] == "unavailable" and report["inference"]["original"] is None
    assert report["payback"]["verdict"] == "not measured" and report["payback"]["job_energy_kwh"] is None
    with zipfile.ZipFile(result.model_zip) as archive:
        assert "model.onnx" in archive.namelist()


def test_gpu_energy_splits_into_idle_and_active_with_exact_figures():
    from workers.engine.energy.meter import split_gpu_energy

    # 100 W idle for an hour is 0.1 kWh; the stage drew 0.25 kWh on its GPU.
    assert split_gpu_energy(0.25, 3600.0, 100.0, 1.0) == {"gpu_idle_kwh": 0.1, "gpu_active_kwh": 0.15}
    # PUE scales the idle part as it scaled the reading; a reading under the idle power is all idle.
    split = split_gpu_energy(0.3, 3600.0, 100.0, 1.5)
    assert split["gpu_idle_kwh"] == pytest.approx(0.15) and split["gpu_active_kwh"] == pytest.approx(0.15)
    assert split_gpu_energy(0.05, 3600.0, 100.0, 1.0) == {"gpu_idle_kwh": 0.05, "gpu_active_kwh": 0.0}
    assert split_gpu_energy(0.05, 3600.0, None, 1.0) == {"gpu_idle_kwh": None, "gpu_active_kwh": None}


class GpuTracker(FakeTracker):
    """2 s per task, 2e-5 kWh of it on the GPU (36 W on average)."""

    def stop_task(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(duration=2.0, cpu_energy=1e-6, gpu_energy=2e-5, ram_energy=3e-6, ram_power=10.0)


def test_stages_and_total_carry_the_idle_split_and_payback_says_how_much_was_idle(monkeypatch):
    from workers.engine.energy.payback import payback_section
    from workers.engine.energy.schema import InferenceEnergyReport

    monkeypatch.setattr(tracking, "make_tracker", lambda settings: GpuTracker())
    settings = EnergySettings(gpu_idle_watts=18.0, gpu_idle_source="NVML, at worker start")
    with open_meter(settings) as meter:
        for stage in ("load", "step_1.distill"):
            meter.begin(stage)
            meter.end(stage)
        energy = meter.report()
    idle_per_stage = 18.0 * 2.0 / 3.6e6  # 1e-5 kWh: half of each stage's GPU energy
    for stage in energy.stages:
        assert stage.gpu_idle_kwh == pytest.approx(idle_per_stage)
        assert stage.gpu_active_kwh == pytest.approx(2e-5 - idle_per_stage)
    assert energy.total.gpu_idle_kwh == pytest.approx(2 * idle_per_stage)
    assert energy.total.gpu_active_kwh == pytest.approx(energy.total.gpu_kwh - 2 * idle_per_stage)
    assert (energy.inputs.gpu_idle_watts, energy.inputs.gpu_idle_source) == (18.0, "NVML, at worker start")

    inference = InferenceEnergyReport(
        device="cuda", batch_size=32, sequence_length=128, inferences_per_run=64, batches_per_run=2, repeats=0,
        threads=1, method="estimated", error=None, wall_time_s=0.0, original=None, result=None,
    )
    payback = payback_section(energy, inference, settings)
    assert payback.job_gpu_idle_kwh == pytest.approx(2 * idle_per_stage)
    # The whole job counts; the note says which part of it was the idle GPU (2e-5 of 4.8e-5 kWh).
    assert payback.job_energy_kwh == pytest.approx(energy.total.energy_kwh)
    assert "drawn by its GPU while idle" in payback.explanation and "(42%)" in payback.explanation
