"""The README.md model card: Hub metadata in YAML front matter, the body's tables, and its place in
the package."""

import copy
import hashlib
import zipfile

import pytest
import yaml

from tests.engine.conftest import QUANTIZE_RECIPE
from tests.engine.test_slices import QUICK_ENERGY, QUICK_EVAL
from tests.factories import TINY_KINDS
from workers.engine.energy.schema import EnergyReport, InferenceEnergyReport, PaybackReport
from workers.engine.model_card import build_model_card
from workers.engine.pipeline import PipelineRequest, run_pipeline
from workers.engine.recipe import Recipe

HUB_CO2_KEYS = {"emissions", "source", "training_type", "geographical_location", "hardware_used"}
# Shaped as workers.engine.energy.schema defines the sections (validated below).
ENERGY = {
    "method": "estimated", "error": None, "stages": [],
    "total": {
        "duration_s": 9.0, "cpu_kwh": 1e-4, "gpu_kwh": 0.0, "ram_kwh": 2e-5, "energy_kwh": 1.2e-4, "co2e_g": 0.0456,
    },
    "inputs": {
        "tracker": "codecarbon", "tracker_version": "3.3.2", "tracking_mode": "machine", "cpu_model": "Intel Xeon",
        "power_model": "4 W per thread", "country": "DEU", "carbon_intensity_g_per_kwh": 380.0,
        "intensity_source": "table", "pue": 1.0, "pue_applied_by": "compresso",
    },
}
_SIDE = {"runtime": "onnxruntime", "device": "cpu", "kwh_per_1000_std": 1e-6, "kwh_per_1000_min": 1e-5,
         "kwh_per_1000_max": 3e-5, "runs": [2e-5], "run_seconds": [1.0]}
INFERENCE = {
    "device": "cpu", "batch_size": 32, "sequence_length": 128, "inferences_per_run": 320, "batches_per_run": 10,
    "repeats": 3, "threads": 2, "method": "estimated", "error": None, "wall_time_s": 4.0,
    "original": _SIDE | {"runtime": "pytorch", "kwh_per_1000_mean": 4e-5},
    "result": _SIDE | {"kwh_per_1000_mean": 2e-5},
}
PAYBACK = {
    "measurable": True, "verdict": "saves energy", "explanation": "The result uses less energy per inference.",
    "difference_kwh_per_1000": 2e-5, "noise_band_kwh_per_1000": 2e-6, "saving_kwh_per_million": 0.02,
    "saving_co2e_g_per_million": 7.6, "break_even_inferences": 6000.0, "break_even_days": None,
    "carbon_break_even_inferences": 6000.0, "carbon_break_even_days": None, "job_energy_kwh": 1.2e-4,
    "job_co2e_g": 0.0456,
    "deployment": {"country": "DEU", "carbon_intensity_g_per_kwh": 380.0, "intensity_source": "table", "pue": 1.2,
                   "requests_per_day": None},
}


def test_the_fake_sections_match_the_energy_schema():
    EnergyReport.model_validate(ENERGY)
    InferenceEnergyReport.model_validate(INFERENCE)
    PaybackReport.model_validate(PAYBACK)


def _split(card: str) -> tuple[dict, str]:
    """(metadata, body): YAML between the first two '---' lines, as the Hub reads it."""
    lines = card.split("\n")
    assert lines[0] == "---"
    end = lines.index("---", 1)
    return yaml.safe_load("\n".join(lines[1:end])), "\n".join(lines[end + 1 :])


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_metadata_names_the_library_task_and_technique(pipeline_runs, kind):
    metadata, body = _split(build_model_card(pipeline_runs[kind].result.report, None))
    expected_tag = {
        "encoder": "feature-extraction", "classifier": "text-classification", "causal-lm": "text-generation",
    }
    assert metadata["library_name"] == "onnx" and metadata["pipeline_tag"] == expected_tag[kind]
    assert {"compresso", "onnx", "int8", "quantized"} <= set(metadata["tags"])
    assert "base_model" not in metadata
    report = pipeline_runs[kind].result.report
    if report["energy"]["method"] not in ("unavailable", "disabled"):
        co2 = metadata["co2_eq_emissions"]
        assert set(co2) == HUB_CO2_KEYS
        assert co2["emissions"] == pytest.approx(report["energy"]["total"]["co2e_g"])
        assert "## Energy and payback" in body
    for heading in ("## Recipe", "## How to use", "## Evaluation data", "## Before and after", "## Files"):
        assert heading in body
    assert "import onnxruntime as ort" in body and "AutoTokenizer.from_pretrained" in body


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_the_cards_snippet_runs_on_the_unzipped_package(pipeline_runs, kind, tmp_path, monkeypatch):
    run = pipeline_runs[kind]
    with zipfile.ZipFile(run.result.model_zip) as archive:
        archive.extractall(tmp_path)
        card = archive.read("README.md").decode("utf-8")
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - our own generated code
    assert namespace["output"].ndim >= 2


def test_energy_section_gives_the_hubs_co2_block_and_a_summary(pipeline_runs):
    report = copy.deepcopy(pipeline_runs["encoder"].result.report) | {
        "energy": ENERGY, "inference": INFERENCE, "payback": PAYBACK,
    }
    metadata, body = _split(build_model_card(report, None))
    co2 = metadata["co2_eq_emissions"]
    assert set(co2) == HUB_CO2_KEYS
    assert co2["emissions"] == pytest.approx(0.0456) and co2["geographical_location"] == "DEU"
    assert co2["hardware_used"] == "Intel Xeon" and "quantize" in co2["training_type"]
    assert co2["source"].startswith("codecarbon 3.3.2, estimated")
    energy = body.split("## Energy and payback", 1)[1]
    assert "0.0456 g CO2e" in energy and "grid DEU" in energy
    assert "| Compressed | onnxruntime | 2e-05 ± 1e-06 |" in energy
    assert "Payback: **saves energy**" in energy and "| break_even_inferences | 6000 |" in energy
    assert "break_even_days" not in energy  # null figures are left out


def test_unavailable_energy_leaves_the_co2_block_out(pipeline_runs):
    unavailable = ENERGY | {"method": "unavailable", "error": "no tracker"}
    report = pipeline_runs["encoder"].result.report | {"energy": unavailable}
    metadata, body = _split(build_model_card(report, None))
    assert "co2_eq_emissions" not in metadata and "This compression job used" not in body
    bare = {key: value for key, value in report.items() if key not in ("energy", "inference", "payback")}
    metadata, body = _split(build_model_card(bare, None))  # a report from before the energy sections
    assert "co2_eq_emissions" not in metadata and "## Energy and payback" not in body


def test_water_and_embodied_figures_are_in_the_body_not_the_front_matter(pipeline_runs):
    report = pipeline_runs["encoder"].result.report
    metadata, body = _split(build_model_card(report, None))
    assert set(metadata["co2_eq_emissions"]) == HUB_CO2_KEYS  # no invented keys beside the Hub's own
    assert not any("water" in key or "embodied" in key for key in metadata)
    section = body.split("## Water and embodied impact", 1)[1]
    water, embodied = report["water"], report["embodied"]
    assert f"consumed {water['total']['water_l']:.4g} L of water" in section
    assert f"WUE {water['worker']['wue_l_per_kwh']:.4g} L/kWh" in section and "Shehabi" in section
    assert f"embodies {embodied['total']['gwp_g']:.4g} g CO2e" in section and "boaviztapi" in section
    assert "| Compressed |" in section and "Payback in L of water:" in section
    assert "Payback in g CO2e embodied:" in section
    bare = {key: value for key, value in report.items() if key not in ("water", "embodied")}
    assert "## Water and embodied impact" not in build_model_card(bare, None)  # a report from before them


def test_slice_table_highlights_the_flagged_slices(pipeline_runs):
    report = copy.deepcopy(pipeline_runs["classifier"].result.report)
    section = report["slices"]
    section["slices"][0] |= {"flagged": True, "drop": 0.5, "name": "odd | name"}
    section["flagged"] = ["odd | name"]
    _, body = _split(build_model_card(report, "ab" * 32))
    table = body.split("## Quality by slice", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == len(section["slices"])
    assert rows[0].startswith("| **odd \\| name** |") and "**flagged**" in rows[0]  # flagged first, pipe escaped
    assert "Flagged: odd \\| name." in table
    assert f"sha256 `{'ab' * 32}`" in body


def test_the_package_holds_the_card_of_the_final_report(tiny_models, labelled_dataset, tmp_path):
    sha256 = hashlib.sha256(labelled_dataset.read_bytes()).hexdigest()
    request = PipelineRequest(
        model_dir=tiny_models["classifier"], recipe=Recipe.from_dict(QUANTIZE_RECIPE), dataset_path=labelled_dataset,
        dataset_sha256=sha256, work_dir=tmp_path / "work", output_dir=tmp_path / "out", eval=QUICK_EVAL,
        energy=QUICK_ENERGY,
    )
    result = run_pipeline(request, lambda *_: None)
    with zipfile.ZipFile(result.model_zip) as archive:
        card = archive.read("README.md").decode("utf-8")
    assert card == build_model_card(result.report, sha256)
    files = {item["path"]: item for item in result.report["files"]}
    assert files["README.md"]["runtime"] == "any"
    metadata, body = _split(card)
    assert metadata["pipeline_tag"] == "text-classification"
    assert sha256 in body and "## Quality by slice" in body
    # Written after the measurement, so not part of the measured package size.
    package = tmp_path / "work" / "package"
    measured = sum(p.stat().st_size for p in package.iterdir() if p.name not in ("report.json", "README.md"))
    assert result.report["result"]["total_size_bytes"] == measured


def test_a_malformed_dataset_sha256_is_refused(tiny_models, tmp_path):
    with pytest.raises(ValueError, match="dataset_sha256"):
        PipelineRequest(
            model_dir=tiny_models["encoder"], recipe=Recipe.from_dict(QUANTIZE_RECIPE), dataset_sha256="not-a-hash",
            work_dir=tmp_path / "work", output_dir=tmp_path / "out",
        )
