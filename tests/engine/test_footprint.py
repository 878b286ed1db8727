"""Water and embodied impact: exact litres and grams from known inputs, the shares a job holds, payback
in each unit, the grid table, and the real Boavizta probe in its isolated interpreter."""

import pytest

from workers.engine.energy.schema import (
    EnergyInputs,
    EnergyReport,
    EnergyTotal,
    InferenceEnergyReport,
    InferenceSide,
    PaybackReport,
    DeploymentReport,
    StageEnergy,
)
from workers.engine.energy.settings import EnergySettings
from workers.engine.footprint.embodied import embodied_section
from workers.engine.footprint.hardware import (
    BoaviztaError,
    GpuSpec,
    HardwareFootprint,
    HardwareSpec,
    ProbedComponent,
    component_share,
    default_python,
    probe_hardware,
)
from workers.engine.footprint.payback import unit_payback
from workers.engine.footprint.schema import WaterSite
from workers.engine.footprint.settings import FootprintSettings
from workers.engine.footprint.water import litres, water_intensity, water_section


def site(wue: float = 1.8, intensity: float = 4.0, pue: float = 1.0) -> WaterSite:
    return WaterSite(
        country="FRA", water_intensity_l_per_kwh=intensity, water_intensity_source="test", wue_l_per_kwh=wue,
        wue_source="test", pue=pue,
    )


def test_a_wue_of_1_8_on_half_a_kwh_is_0_9_litres_on_site():
    onsite, offsite = litres(0.5, site())
    assert onsite == pytest.approx(0.9)
    assert offsite == pytest.approx(2.0)


def test_on_site_water_counts_it_energy_and_off_site_water_the_facility_energy():
    # 0.6 kWh at PUE 1.5 is 0.4 kWh of IT energy: 0.4 x 1.8 on site, 0.6 x 4.0 off site.
    onsite, offsite = litres(0.6, site(pue=1.5))
    assert onsite == pytest.approx(0.72)
    assert offsite == pytest.approx(2.4)


def test_the_grid_water_intensity_comes_from_ecologits_and_says_when_it_is_the_world_figure():
    from ecologits.electricity_mix_repository import electricity_mixes

    value, source = water_intensity("fra")
    assert value == electricity_mixes.find_electricity_mix("FRA").wue
    assert source.startswith("FRA: EcoLogits")
    world, _ = water_intensity(None)
    assert world == electricity_mixes.find_electricity_mix("WOR").wue
    # EcoLogits marks countries without a figure of their own; the source must say so.
    fallback = next(
        mix.zone for mix in electricity_mixes.list_electricity_mixes()
        if any(w.code == "electricity-mix-wue-world" for w in mix.warnings)
    )
    assert "world average" in water_intensity(fallback)[1]
    assert "not in" in water_intensity("XYZ")[1]


def _energy(stages: list[tuple[str, float, float]], pue: float = 1.0) -> EnergyReport:
    rows = [
        StageEnergy(stage=name, duration_s=seconds, cpu_kwh=kwh, gpu_kwh=0.0, ram_kwh=0.0, energy_kwh=kwh,
                    co2e_g=kwh * 100, method="estimated")
        for name, seconds, kwh in stages
    ]
    total = sum(kwh for _, _, kwh in stages)
    return EnergyReport(
        method="estimated", error=None,
        inputs=EnergyInputs(
            tracker="test", tracker_version=None, tracking_mode="process", power_model="test", country="FRA",
            carbon_intensity_g_per_kwh=100.0, intensity_source="test", pue=pue, pue_applied_by="test",
        ),
        stages=rows,
        total=EnergyTotal(duration_s=sum(s for _, s, _ in stages), cpu_kwh=total, gpu_kwh=0.0, ram_kwh=0.0,
                          energy_kwh=total, co2e_g=total * 100),
    )


def _side(kwh_per_1000: float, run_seconds: list[float]) -> InferenceSide:
    return InferenceSide(
        runtime="onnxruntime", device="cpu", kwh_per_1000_mean=kwh_per_1000, kwh_per_1000_std=0.0,
        kwh_per_1000_min=kwh_per_1000, kwh_per_1000_max=kwh_per_1000, runs=[kwh_per_1000] * len(run_seconds),
        run_seconds=run_seconds,
    )


def _inference(before: InferenceSide | None, after: InferenceSide | None) -> InferenceEnergyReport:
    return InferenceEnergyReport(
        device="cpu", batch_size=8, sequence_length=16, inferences_per_run=500, batches_per_run=63, repeats=3,
        threads=2, method="estimated", error=None, wall_time_s=1.0, original=before, result=after,
    )


def _payback(measurable: bool, verdict: str = "saves energy") -> PaybackReport:
    return PaybackReport(
        measurable=measurable, verdict=verdict, explanation="", difference_kwh_per_1000=None,
        noise_band_kwh_per_1000=None, saving_kwh_per_million=None, saving_co2e_g_per_million=None,
        break_even_inferences=None, break_even_days=None, carbon_break_even_inferences=None,
        carbon_break_even_days=None, job_energy_kwh=None, job_co2e_g=None,
        deployment=DeploymentReport(country=None, carbon_intensity_g_per_kwh=1.0, intensity_source="", pue=1.0,
                                    requests_per_day=None),
    )


def test_water_per_stage_sums_to_the_total_and_per_inference_uses_the_deployment():
    energy = _energy([("load", 1.0, 0.25), ("step_1.quantize", 10.0, 0.5)], pue=1.25)
    inference = _inference(_side(0.002, [1.0, 1.0, 1.0]), _side(0.001, [0.5, 0.5, 0.5]))
    energy_settings = EnergySettings(country="FRA", pue=1.25, deployment_country="DEU", deployment_pue=1.1,
                                     requests_per_day=1000)
    settings = FootprintSettings(wue_l_per_kwh=1.8, deployment_wue_l_per_kwh=0.5)
    water = water_section(energy, inference, _payback(True), energy_settings, settings)
    fra, deu = water_intensity("FRA")[0], water_intensity("DEU")[0]
    assert water.stages[1].onsite_l == pytest.approx(0.5 / 1.25 * 1.8)
    assert water.stages[1].offsite_l == pytest.approx(0.5 * fra)
    assert water.total.water_l == pytest.approx(sum(stage.water_l for stage in water.stages))
    assert water.total.water_l == pytest.approx(0.75 / 1.25 * 1.8 + 0.75 * fra)
    # Device kWh per 1,000 x the deployment's WUE on site; x its PUE x its grid off site.
    assert water.inference.original.onsite_l == pytest.approx(0.002 * 0.5)
    assert water.inference.original.offsite_l == pytest.approx(0.002 * 1.1 * deu)
    saving_per_inference = (water.inference.original.water_l - water.inference.result.water_l) / 1000
    assert water.payback.verdict == "saves"
    assert water.payback.break_even_inferences == pytest.approx(water.total.water_l / saving_per_inference)
    assert water.payback.break_even_days == pytest.approx(water.payback.break_even_inferences / 1000)
    unmeasured = water_section(energy, inference, _payback(False, "no measurable saving"), energy_settings, settings)
    assert unmeasured.payback.verdict == "no measurable saving" and unmeasured.payback.break_even_inferences is None


def _footprint(gwp_kg_per_hour: dict[str, float], threads: int = 16, visible: int = 2, jobs: int = 1) -> HardwareFootprint:
    return HardwareFootprint(
        spec=HardwareSpec(cpu_name="test", visible_threads=visible, ram_gb=16, gpus=[GpuSpec(name="g", units=1)],
                          jobs_sharing_host=jobs),
        tool="boaviztapi", tool_version="test", lifetime_hours=35040, lifetime_source="test",
        components=[
            ProbedComponent(component=name, description=name, assumptions={}, warnings=[],
                            threads=threads if name == "cpu" else None,
                            per_hour={"gwp": {"value": value, "min": value, "max": value},
                                      "adp": {"value": 1e-9, "min": 1e-9, "max": 1e-9}})
            for name, value in gwp_kg_per_hour.items()
        ],
    )


def test_a_job_is_charged_its_share_of_each_component_for_each_stage():
    # 0.036 kg/h of RAM held whole for 100 s is exactly 1 g; a CPU of which 2 of 16 threads are held, 1/8.
    footprint = _footprint({"cpu": 0.288, "ram": 0.036})
    energy = _energy([("load", 25.0, 0.0), ("step_1.quantize", 75.0, 0.0)])
    report = embodied_section(
        energy, _inference(None, None), "cpu", 100.0, None, FootprintSettings(hardware=footprint)
    )
    assert report.method == "estimated"
    assert report.inputs.per_hour.gwp_g == pytest.approx(36.0 + 36.0)
    assert report.stages[0].gwp_g == pytest.approx(0.5)
    assert report.total.gwp_g == pytest.approx(2.0)
    assert report.total.gwp_g == pytest.approx(sum(stage.gwp_g for stage in report.stages))
    assert report.total.adp_kgsbeq == pytest.approx(1e-9 * (1 / 8 + 1) * 100 / 3600)
    assert report.payback.verdict == "not measured"


def test_shares_follow_threads_concurrency_and_pinned_gpus():
    footprint = _footprint({"cpu": 1.0, "ram": 1.0, "gpu": 1.0}, threads=16, visible=4, jobs=2)
    shares = {c.component: component_share(c, footprint.spec)[0] for c in footprint.components}
    assert shares == pytest.approx({"cpu": 4 / 16 / 2, "ram": 1 / 2, "gpu": 1.0})


def test_embodied_per_inference_uses_the_targets_components_and_the_measured_time():
    footprint = _footprint({"cpu": 0.0, "ram": 0.036, "gpu": 3.6})
    before = _side(0.002, [1.0, 1.02, 0.98])   # 500 inferences per run: 2 s per 1,000
    after = _side(0.001, [0.5, 0.51, 0.49])    # 1 s per 1,000
    settings = FootprintSettings(hardware=footprint)
    on_cpu = embodied_section(_energy([("load", 1.0, 0.0)]), _inference(before, after), "cpu", 1.0, 1e6, settings)
    assert on_cpu.inference.components == ["cpu", "ram"]
    assert on_cpu.inference.original.seconds == pytest.approx(2.0)
    assert on_cpu.inference.original.gwp_g == pytest.approx(36.0 * 2.0 / 3600)
    assert on_cpu.payback.verdict == "saves"
    saving = (on_cpu.inference.original.gwp_g - on_cpu.inference.result.gwp_g) / 1000
    assert on_cpu.payback.break_even_inferences == pytest.approx(on_cpu.total.gwp_g / saving)
    on_cuda = embodied_section(_energy([("load", 1.0, 0.0)]), _inference(before, after), "cuda", 1.0, None, settings)
    assert on_cuda.inference.original.gwp_g == pytest.approx((36.0 + 3600.0) * 2.0 / 3600)
    noisy = _side(0.001, [0.4, 1.6, 1.0])
    unclear = embodied_section(_energy([("load", 1.0, 0.0)]), _inference(before, noisy), "cpu", 1.0, None, settings)
    assert unclear.payback.verdict == "no measurable saving" and "noise band" in unclear.payback.explanation


def test_without_a_hardware_footprint_the_section_says_why():
    report = embodied_section(
        _energy([]), _inference(None, None), "cpu", 1.0, None, FootprintSettings(hardware_error="probe failed: x")
    )
    assert report.method == "unavailable" and report.error == "probe failed: x" and report.total is None


def test_unit_payback_exact_and_costs_more():
    saves = unit_payback("L", 2.0, 0.004, True, "", 100.0)
    assert saves.break_even_inferences == pytest.approx(2.0 / 4e-6) and saves.break_even_days == pytest.approx(5000.0)
    worse = unit_payback("L", 2.0, -0.004, True, "", 100.0)
    assert worse.verdict == "costs more" and worse.break_even_inferences is None and "never paid back" in worse.explanation


SPEC = HardwareSpec(
    cpu_name="Intel Xeon Platinum 8480+", visible_threads=8, ram_gb=24, gpus=[GpuSpec(name="NVIDIA H200", units=1)]
)


@pytest.fixture(scope="module")
def probed() -> HardwareFootprint:
    return probe_hardware(SPEC, None, default_python())


def test_boavizta_completes_the_hardware_and_allocates_per_hour(probed):
    assert probed.tool == "boaviztapi" and probed.lifetime_source.startswith("Boavizta's default server archetype")
    by_kind = {component.component: component for component in probed.components}
    assert set(by_kind) == {"cpu", "ram", "gpu"}
    for component in probed.components:
        assert component.per_hour["gwp"]["value"] > 0
    assert "fuzzy match" in by_kind["cpu"].assumptions["name"] and by_kind["cpu"].threads > 8
    assert by_kind["ram"].description == "24 GB of RAM"


def test_the_lifetime_setting_scales_the_hourly_allocation(probed):
    years = probed.lifetime_hours / 8760 / 2
    halved = probe_hardware(SPEC, years, default_python())
    assert halved.lifetime_hours == pytest.approx(probed.lifetime_hours / 2)
    for before, after in zip(probed.components, halved.components, strict=True):
        assert after.per_hour["gwp"]["value"] == pytest.approx(2 * before.per_hour["gwp"]["value"])


def test_a_missing_boavizta_interpreter_says_how_to_install_it(tmp_path):
    with pytest.raises(BoaviztaError, match="make install"):
        probe_hardware(SPEC, None, tmp_path / "python")
