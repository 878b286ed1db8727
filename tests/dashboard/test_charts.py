"""The report charts: valid, accessible SVG with countable marks, from a real MiniLM report and from
synthetic variants (user text in slice names, missing sections, degenerate numbers)."""

import copy
import json
import math
from pathlib import Path
from xml.etree import ElementTree

import pytest

from app.dashboard import charts
from app.dashboard.svg import PALETTE, ticks

REPORT = json.loads((Path(__file__).parents[2] / "benchmarks/results/api_quantize_minilm.json").read_text())["report"]
# A real goal search on MiniLM (benchmarks/auto_bench.py), for the search's chart.
SEARCH = json.loads((Path(__file__).parents[2] / "benchmarks/results/auto_bench_calibration.json").read_text())[
    "goals"]["smallest"]["search"]
NS = {"svg": "http://www.w3.org/2000/svg"}
SCRIPT = "<script>alert(1)</script>"
CHART_FUNCTIONS = [chart for _, chart in charts.CHARTS]


def parse(svg: str) -> ElementTree.Element:
    return ElementTree.fromstring(svg)


def marks(root: ElementTree.Element, series: str | None = None) -> list[ElementTree.Element]:
    found = [el for el in root.iter() if "mark" in (el.get("class") or "").split() and el.get("data-series")]
    return [el for el in found if series is None or el.get("data-series") == series]


def slice_row(name: str, before: float, after: float, *, flagged: bool = False, small: bool = False) -> dict:
    return {"name": name, "count": 12, "before": before, "after": after, "drop": before - after,
            "flagged": flagged, "small": small}


@pytest.fixture
def with_slices() -> dict:
    report = copy.deepcopy(REPORT)
    report["slices"].update(
        source="slice",
        overall={"count": 36, "before": 1.0, "after": 0.98, "drop": 0.02},
        slices=[slice_row("news", 1.0, 0.995), slice_row(SCRIPT, 1.0, 0.9, flagged=True, small=True),
                slice_row("legal", 1.0, 1.0)],
        flagged=[SCRIPT],
    )
    report["search"] = copy.deepcopy(SEARCH)
    report["search"]["candidates"][0]["description"] = SCRIPT
    return report


@pytest.fixture
def multi_step() -> dict:
    """Three steps whose last size differs from the exported result, with labelled quality."""
    report = copy.deepcopy(REPORT)
    report["steps"] = [{"technique": name, "wall_time_s": 1.0, "size_bytes_after": size}
                       for name, size in (("prune", 70_000_000), ("distill", 45_000_000), ("quantize", 22_000_000))]
    report["original"]["quality"] = {"accuracy": 0.91, "macro_f1": 0.9, "num_labelled": 100}
    report["result"]["quality"] = {"accuracy": 0.87, "macro_f1": 0.85, "num_labelled": 100}
    return report


def test_the_real_report_draws_every_chart_but_slices_in_order():
    titles = [title for title, _ in charts.all_charts(REPORT)]
    assert titles == ["Size versus quality", "Size through the steps", "Latency", "Energy of the job",
                      "Energy per 1,000 inferences"]


@pytest.mark.parametrize("chart", CHART_FUNCTIONS, ids=lambda chart: chart.__name__)
def test_each_chart_is_accessible_scalable_svg(chart, with_slices):
    svg = chart(with_slices)
    root = parse(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("role") == "img"
    assert root.get("class").split()[0] == "chart" and root.get("class").split()[1].startswith("chart-")
    assert root.get("width") == "100%" and len(root.get("viewBox").split()) == 4
    title_id, desc_id = root.get("aria-labelledby").split()
    title = root.find(f"svg:title[@id='{title_id}']", NS)
    desc = root.find(f"svg:desc[@id='{desc_id}']", NS)
    assert title.text and desc.text
    assert any(ch.isdigit() for ch in desc.text)  # the numbers in words, for screen readers
    assert marks(root)


def test_ids_are_unique_across_a_page_of_charts(with_slices):
    ids = [el.get("id") for _, svg in charts.all_charts(with_slices) for el in parse(svg).iter() if el.get("id")]
    assert len(ids) == len(set(ids)) == 2 * 7


def test_size_quality_places_the_original_and_the_result():
    root = parse(charts.size_quality_chart(REPORT))
    original, result = marks(root, "original"), marks(root, "result")
    assert len(original) == len(result) == 1 and not marks(root, "step")
    assert float(original[0].get("data-value")) == 1.0
    assert float(result[0].get("data-value")) == pytest.approx(REPORT["fidelity"]["metrics"]["cosine_mean"], rel=1e-5)
    assert float(result[0].get("data-x")) == pytest.approx(REPORT["result"]["size_bytes"] / 1e6, rel=1e-5)
    desc = root.find("svg:desc", NS).text
    assert "90.9 MB" in desc and "23.0 MB" in desc and "0.9923" in desc and "3.96 times smaller" in desc


def test_size_quality_uses_accuracy_and_marks_intermediate_steps_on_the_size_axis(multi_step):
    root = parse(charts.size_quality_chart(multi_step))
    assert [float(el.get("data-x")) for el in marks(root, "step")] == [70.0, 45.0]
    assert all(el.get("data-value") == "" for el in marks(root, "step"))  # quality not measured there
    assert float(marks(root, "result")[0].get("data-value")) == 0.87
    assert "accuracy" in root.find("svg:desc", NS).text


def test_waterfall_goes_from_the_original_through_each_step_to_the_result(multi_step):
    root = parse(charts.step_waterfall_chart(REPORT))
    assert [el.get("data-series") for el in marks(root)] == ["original", "step", "result"]
    assert float(marks(root, "step")[0].get("data-value")) == pytest.approx(
        (REPORT["result"]["size_bytes"] - REPORT["original"]["size_bytes"]) / 1e6, rel=1e-5)
    assert "result: cosine_mean 0.9923" in svg_text(root)
    # Three steps, then an export column for the size change after the last step.
    root = parse(charts.step_waterfall_chart(multi_step))
    steps = marks(root, "step")
    assert len(steps) == 4
    assert "increase" in steps[-1].get("class") and steps[-1].get("fill") == PALETTE["increase"]
    assert "result: accuracy 0.8700" in svg_text(root)


def svg_text(root: ElementTree.Element) -> str:
    return " ".join("".join(el.itertext()) for el in root.iter("{http://www.w3.org/2000/svg}text"))


def test_latency_has_p50_bars_and_p95_whiskers_per_batch():
    root = parse(charts.latency_chart(REPORT))
    bars = marks(root)
    assert len(bars) == 4 and {el.get("data-series") for el in bars} == {"original", "result"}
    whiskers = [el for el in root.iter() if el.get("class") == "whisker"]
    assert len(whiskers) == 4
    p50 = REPORT["original"]["latency"]["batch_1"]["p50_ms"]
    assert float(bars[0].get("data-value")) == pytest.approx(p50, rel=1e-5)
    assert "batch size 1" in svg_text(root) and "batch size 32" in svg_text(root)


def test_slice_names_are_escaped_and_flagged_slices_marked_in_colour_and_words(with_slices):
    svg = charts.slice_chart(with_slices)
    assert SCRIPT not in svg and "&lt;script&gt;" in svg
    root = parse(svg)
    assert len(marks(root, "before")) == len(marks(root, "after")) == 3
    groups = [el for el in root.iter() if "slice" in (el.get("class") or "").split()]
    flagged = [group for group in groups if "flagged" in group.get("class").split()]
    assert [group.get("data-slice") for group in flagged] == [SCRIPT]  # flagged first, name intact
    marker = flagged[0].find(".//svg:tspan[@class='flag-marker']", NS)
    assert "flagged" in marker.text
    after = marks(flagged[0], "after")
    assert "flagged" in after[0].get("class") and after[0].get("fill") == PALETTE["flagged"]
    for group in groups:
        if group not in flagged:
            assert group.find(".//svg:tspan[@class='flag-marker']", NS) is None
            assert marks(group, "after")[0].get("fill") != PALETTE["flagged"]
    references = [el.get("data-series") for el in root.iter() if el.get("class") == "reference"]
    assert references == ["overall-before", "overall-after"]
    assert f"Flagged: {SCRIPT}." in root.find("svg:desc", NS).text


def test_many_slices_are_capped_with_a_note(with_slices):
    with_slices["slices"]["slices"] = [slice_row(f"s{i}", 1.0, 0.99) for i in range(30)]
    root = parse(charts.slice_chart(with_slices, max_rows=10))
    assert len(marks(root, "after")) == 10 and "20 more slices not shown." in svg_text(root)


def test_energy_stacks_cpu_gpu_ram_per_stage_and_inference_has_error_bars():
    root = parse(charts.energy_chart(REPORT))
    stages = REPORT["energy"]["stages"]
    assert len(marks(root)) == 3 * len(stages)
    cpu = marks(root, "cpu")
    assert float(cpu[0].get("data-value")) == pytest.approx(stages[0]["cpu_kwh"] * 1e6, rel=1e-5)  # mWh
    assert "mWh" in svg_text(root) and "inference_energy" in svg_text(root)
    root = parse(charts.inference_energy_chart(REPORT))
    assert [el.get("data-series") for el in marks(root)] == ["original", "result"]
    assert len([el for el in root.iter() if el.get("class") == "whisker"]) == 2
    assert "payback: saves energy" in svg_text(root)


def test_missing_sections_give_no_chart_and_all_charts_skips_them():
    report = copy.deepcopy(REPORT)
    report["slices"] = None
    del report["energy"], report["inference"], report["payback"]
    assert charts.slice_chart(report) is None
    assert charts.energy_chart(report) is None
    assert charts.inference_energy_chart(report) is None
    assert [title for title, _ in charts.all_charts(report)] == ["Size versus quality", "Size through the steps",
                                                                 "Latency"]
    assert charts.all_charts({}) == [] and charts.all_charts(None) == []  # type: ignore[arg-type]
    assert charts.size_quality_chart({"original": {"size_bytes": 10}, "result": {"size_bytes": 5}}) is None


def degenerate_variants() -> dict[str, dict]:
    variants = {}

    def variant(name: str, change) -> None:
        report = copy.deepcopy(REPORT)
        report["slices"]["slices"] = [slice_row("a", 1.0, 0.99), slice_row("b", 1.0, 1.0)]
        change(report)
        variants[name] = report

    def zero(report):
        report["original"]["size_bytes"] = report["result"]["size_bytes"] = 0
        report["steps"][0]["size_bytes_after"] = 0
        for side in ("original", "result"):
            report[side]["latency"]["batch_1"] = {"p50_ms": 0.0, "p95_ms": 0.0, "runs": 1}
            report["inference"][side].update(kwh_per_1000_mean=0.0, kwh_per_1000_std=0.0)
        for stage in report["energy"]["stages"]:
            stage.update(cpu_kwh=0.0, gpu_kwh=0.0, ram_kwh=0.0)

    def equal(report):
        report["result"]["size_bytes"] = report["steps"][0]["size_bytes_after"] = report["original"]["size_bytes"]
        report["fidelity"]["metrics"]["cosine_mean"] = 1.0
        report["slices"]["slices"] = [slice_row("same", 0.5, 0.5), slice_row("same too", 0.5, 0.5)]
        report["slices"]["overall"].update(before=0.5, after=0.5)

    def nulls(report):
        report["fidelity"]["metrics"]["cosine_mean"] = None
        report["steps"] = None
        report["original"]["latency"]["batch_1"] = None
        report["result"]["latency"] = None
        report["inference"]["result"] = None
        report["inference"]["original"]["kwh_per_1000_std"] = math.nan
        report["energy"]["stages"][0]["cpu_kwh"] = None
        report["slices"]["overall"] = None

    def extremes(report):
        report["original"]["size_bytes"] = 10**15
        report["result"]["size_bytes"] = 1
        report["original"]["latency"]["batch_32"]["p95_ms"] = 1.0  # p95 below p50: no whisker
        report["slices"]["slices"] = [slice_row("worse", 0.9, 0.1, flagged=True), slice_row("better", 0.1, 0.9)]
        report["energy"]["stages"][0]["cpu_kwh"] = 5000.0
        report["inference"]["original"]["kwh_per_1000_std"] = 1.0  # mean - std below zero

    for name, change in (("zero", zero), ("equal", equal), ("nulls", nulls), ("extremes", extremes)):
        variant(name, change)
    return variants


@pytest.mark.parametrize("name", ["zero", "equal", "nulls", "extremes"])
def test_degenerate_values_still_draw_valid_svg(name):
    report = degenerate_variants()[name]
    drawn = charts.all_charts(report)
    assert drawn
    for _, svg in drawn:
        root = parse(svg)
        for el in list(root.iter())[1:]:  # the root's width is "100%"
            assert "nan" not in (el.get("d") or "") + (el.get("data-value") or "")
            for attribute in ("x", "y", "width", "height", "cx", "cy"):
                if el.get(attribute) is not None:
                    assert math.isfinite(float(el.get(attribute))), (name, el.tag, attribute)
    if name == "nulls":
        titles = [title for title, _ in drawn]
        assert "Size versus quality" not in titles and "Latency" in titles


def test_ticks_cover_degenerate_ranges():
    assert ticks([5.0, 5.0]) and ticks([5.0, 5.0])[0] < 5.0 < ticks([5.0, 5.0])[-1]
    zeros = ticks([0.0, 0.0], zero=True)
    assert zeros[0] == 0 and zeros[-1] == pytest.approx(1.0)
    assert ticks([None]) == ticks([])
    huge = ticks([1.0, 1e15], zero=True)
    assert huge[0] == 0 and huge[-1] >= 1e15 and len(huge) <= 8
    assert ticks([-0.05, 0.2])[0] <= -0.05


def contrast(colour: str) -> float:
    channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return 1.05 / (luminance + 0.05)


@pytest.mark.parametrize("name", sorted(PALETTE))
def test_palette_meets_wcag_aa_against_white(name):
    assert contrast(PALETTE[name]) >= 4.5


def test_the_search_front_marks_every_candidate_the_front_and_the_choice(with_slices):
    svg = charts.search_front_chart(with_slices)
    root = parse(svg)
    candidates = with_slices["search"]["candidates"]
    assert len(marks(root)) == len(candidates)
    chosen = marks(root, "chosen")
    assert len(chosen) == 1
    picked = next(c for c in candidates if c["chosen"])
    assert float(chosen[0].get("data-x")) == pytest.approx(picked["size_ratio"], rel=1e-5)
    assert len(marks(root, "feasible")) == sum(1 for c in candidates if c["feasible"] and not c["chosen"])
    # The floor is drawn, and user-facing text is escaped.
    assert "min_fidelity 0.99" in svg and SCRIPT not in svg
    front = sum(1 for c in candidates if c["pareto"])
    assert f"{front} on the Pareto front" in svg
    assert charts.search_front_chart(REPORT) is None
