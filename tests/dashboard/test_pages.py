"""Dashboard pages rendered by the real app over Postgres, from rows with a real MiniLM report."""

import copy
import json
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.app.conftest import client  # noqa: F401 - the shared fixture
from tests.rows import add_energy_row, add_job_row, add_model_row

REPORT = json.loads((Path(__file__).parents[2] / "benchmarks/results/api_quantize_minilm.json").read_text())["report"]


@pytest.fixture
def finished_job(client):  # noqa: F811
    report = copy.deepcopy(REPORT)
    report["slices"] = {
        "source": "slice", "metric": "cosine_mean", "margin": 0.02, "min_rows": 5, "ungrouped": 0,
        "overall": {"count": 20, "before": 1.0, "after": 0.99, "drop": 0.01},
        "slices": [
            {"name": "news", "count": 10, "before": 1.0, "after": 0.995, "drop": 0.005, "flagged": False, "small": False},
            {"name": "<script>alert(1)</script>", "count": 10, "before": 1.0, "after": 0.95, "drop": 0.05,
             "flagged": True, "small": False},
        ],
        "flagged": ["<script>alert(1)</script>"],
    }
    model_id = add_model_row(name="all-MiniLM-L6-v2")
    job_id = add_job_row(model_id, name="minilm-int8", status="succeeded", progress=1.0, stage="done", report=report,
                         recipe={"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]})
    add_energy_row(job_id, "load", cpu_kwh=0.001, ram_kwh=0.001, co2e_g=1.0)
    return job_id


def test_overview_shows_totals_and_links_jobs(client, finished_job):  # noqa: F811
    page = client.get("/")
    assert page.status_code == 200
    assert f'href="/jobs/{finished_job}"' in page.text
    saved_mb = (REPORT["original"]["size_bytes"] - REPORT["result"]["size_bytes"]) / 1e6
    assert f"{saved_mb:.1f} MB" in page.text
    assert 'id="total-compressed">1<' in page.text


def test_job_page_shows_the_report_tables_and_charts(client, finished_job):  # noqa: F811
    page = client.get(f"/jobs/{finished_job}")
    assert page.status_code == 200
    html = page.text
    assert 'id="before-after"' in html and "3.96x smaller" in html
    assert f"/v1/jobs/{finished_job}/report" in html
    svgs = re.findall(r"<svg.*?</svg>", html, re.S)
    assert len(svgs) >= 4
    for svg in svgs:
        assert ElementTree.fromstring(svg).get("role") == "img"
    # User text from the dataset (a slice name) is escaped everywhere on the page.
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'class="flagged"' in html
    assert "Payback" in html
    assert 'id="cancel"' not in html  # finished jobs cannot be cancelled


def _with_footprint(report: dict) -> dict:
    """The report with water and embodied sections computed by the engine from its own energy sections."""
    from workers.engine.energy.schema import EnergyReport, InferenceEnergyReport, PaybackReport
    from workers.engine.energy.settings import EnergySettings
    from workers.engine.footprint.hardware import HardwareFootprint, HardwareSpec, ProbedComponent
    from workers.engine.footprint.sections import footprint_sections
    from workers.engine.footprint.settings import FootprintSettings

    hourly = {"gwp": {"value": 0.01, "min": 0.01, "max": 0.01}}
    hardware = HardwareFootprint(
        spec=HardwareSpec(cpu_name="test", visible_threads=2, ram_gb=8), tool="boaviztapi", tool_version="test",
        lifetime_hours=35040, lifetime_source="test",
        components=[ProbedComponent(component="ram", description="8 GB of RAM", per_hour=hourly, assumptions={},
                                    warnings=[])],
    )
    water, embodied = footprint_sections(
        EnergyReport.model_validate(report["energy"]), InferenceEnergyReport.model_validate(report["inference"]),
        PaybackReport.model_validate(report["payback"]), EnergySettings(country="DEU"),
        FootprintSettings(hardware=hardware), "cpu", 10.0,
    )
    return report | {"water": water.model_dump(), "embodied": embodied.model_dump()}


def test_job_page_shows_water_and_embodied_impact(client):  # noqa: F811
    report = _with_footprint(copy.deepcopy(REPORT))
    job_id = add_job_row(add_model_row(), status="succeeded", progress=1.0, stage="done", report=report)
    html = client.get(f"/jobs/{job_id}").text
    section = html.split('id="footprint-heading"', 1)[1].split("</section>", 1)[0]
    assert f"{report['water']['total']['water_l']:.3g} L" in section
    assert f"{report['embodied']['total']['gwp_g']:.3g} g CO2e" in section
    assert report["water"]["payback"]["verdict"] in section and "8 GB of RAM" in section
    assert "grid DEU" in section
    bare = client.get(f"/jobs/{add_job_row(add_model_row(), status='succeeded', report=REPORT)}").text
    assert 'id="footprint-heading"' not in bare  # a report from before these sections


def test_overview_shows_the_running_totals_of_succeeded_jobs(client):  # noqa: F811
    report = _with_footprint(copy.deepcopy(REPORT))
    for _ in range(2):
        add_job_row(add_model_row(), status="succeeded", report=report)
    add_job_row(add_model_row(), status="failed", report=report)  # a failed job counts nothing
    html = client.get("/").text
    assert 'id="total-compressed">2<' in html
    assert f'id="total-water">{2 * report["water"]["total"]["water_l"]:.3g} L<' in html
    assert f'id="total-embodied">{2 * report["embodied"]["total"]["gwp_g"]:.3g} g CO2e<' in html


def test_running_job_page_watches_the_job(client):  # noqa: F811
    job_id = add_job_row(add_model_row(), status="running", progress=0.4, stage="evaluate_original")
    html = client.get(f"/jobs/{job_id}").text
    assert 'id="cancel"' in html
    assert f'watchJob("{job_id}")' in html
    assert client.get("/static/jobs.js").status_code == 200
    assert client.get("/static/dashboard.css").status_code == 200


def test_unknown_job_page_is_404(client):  # noqa: F811
    assert client.get("/jobs/nope").status_code == 404


NAV = ('href="/"', 'href="/models"', 'href="/datasets"', 'href="/jobs/new"', 'href="/docs"')


@pytest.mark.parametrize("path", ["/", "/models", "/datasets", "/jobs/new"])
def test_every_page_has_the_nav_links(client, path):  # noqa: F811
    page = client.get(path)
    assert page.status_code == 200
    for link in NAV:
        assert link in page.text
    assert f'href="{path}" aria-current="page"' in page.text


@pytest.mark.parametrize(("path", "endpoint", "accept"), [
    ("/models", "/v1/models", ".zip,.tar.gz"),
    ("/datasets", "/v1/datasets", ".jsonl,.csv"),
])
def test_upload_pages_have_the_form_and_the_list(client, path, endpoint, accept):  # noqa: F811
    add_model_row(name="listed-model")
    html = client.get(path).text
    assert f'data-endpoint="{endpoint}"' in html
    assert '<label for="upload-file">' in html and 'id="upload-file" name="file" type="file"' in html
    assert f'accept="{accept}' in html
    assert '<label for="upload-name">' in html
    assert '<progress id="upload-progress"' in html and 'id="upload-cancel"' in html
    assert 'id="upload-error" role="alert"' in html
    assert "/static/uploads.js" in html
    if path == "/models":
        assert "listed-model" in html and 'aria-label="Delete listed-model"' in html
    assert client.get("/static/uploads.js").status_code == 200


def test_new_job_page_has_the_form_and_presets(client):  # noqa: F811
    add_model_row(name="pick-me")
    html = client.get("/jobs/new").text
    for field in ("model_id", "dataset_id", "device", "target", "recipe-text", "add-technique"):
        assert f'<label for="{field}">' in html
    assert '<option value="onnxruntime/cpu">' in html and '<option value="executorch/cpu">' in html
    assert "pick-me" in html
    assert 'id="form-error" role="alert"' in html
    # Preset buttons come from GET /v1/recipes/presets, not from the page: one source of truth.
    assert 'id="preset-buttons"' in html and "int8_dynamic" not in html
    assert "/v1/recipes/presets" in client.get("/static/recipe.js").text
    # The goal form beside the recipe builder.
    for field in ("goal-min_fidelity", "goal-max_perplexity_increase", "goal-max_size_ratio", "goal-objective",
                  "goal-budget_minutes"):
        assert f'<label for="{field}">' in html
    assert '<option value="least_energy">' in html
    assert "/static/recipe.js" in html
    assert client.get("/static/recipe.js").status_code == 200
    # The YAML parser is served by the app itself: the page works offline.
    assert "/static/vendor/js-yaml.min.js" in html
    assert "js-yaml" in client.get("/static/vendor/js-yaml.min.js").text[:2000]


def test_job_page_shows_a_language_models_perplexity_and_generation_speed(client):  # noqa: F811
    report = copy.deepcopy(REPORT)
    pair = {"source": "dataset", "tokens": 7441, "window": 1024, "stride": 512, "original": 120.5, "result": 124.1,
            "relative_increase": 124.1 / 120.5 - 1}
    report["perplexity"] = {"dataset": pair, "general": {**pair, "source": "builtin", "tokens": 9000}}
    stats = {"time_to_first_token_ms": 12.5, "prefill_tokens_per_s": 9000.0, "decode_tokens_per_s": 350.0, "generate_s": 0.1}
    for side, speed in (("original", 350.0), ("result", 410.0)):
        report[side]["generation"] = {"prompt_tokens": 128, "new_tokens": 32, "device": "cpu", "repeats": 3,
                                      "batches": {"batch_1": {**stats, "decode_tokens_per_s": speed}}}
    side = {"runtime": "pytorch", "device": "cpu", "kwh_per_1000_std": 0.0, "kwh_per_1000_min": 0.0,
            "kwh_per_1000_max": 0.0, "runs": [], "run_seconds": []}
    report["generation_energy"] = {
        "original": {**side, "kwh_per_1000_mean": 2.5e-6}, "result": {**side, "kwh_per_1000_mean": 1.25e-6},
        "payback": {"explanation": "Saves 0.00125 kWh per million generated tokens."},
    }
    job_id = add_job_row(add_model_row(), status="succeeded", progress=1.0, stage="done", report=report)
    html = client.get(f"/jobs/{job_id}").text
    energy = html.split('id="generation-energy"', 1)[1].split("</p>", 1)[0]
    assert "2.5e-06 kWh per 1,000" in energy and "1.25e-06 after" in energy and "generated tokens." in energy
    table = html.split('id="before-after"', 1)[1].split("</table>", 1)[0]
    assert "Perplexity, the job&#39;s texts (7,441 tokens)" in table and "124.100 (+2.99%)" in table
    assert "Perplexity, builtin sample (9,000 tokens)" in table
    assert "12.5 ms / 350" in table and "12.5 ms / 410" in table


def test_a_goal_jobs_page_shows_its_goal_estimate_front_and_candidates(client):  # noqa: F811
    bench = json.loads((Path(__file__).parents[2] / "benchmarks/results/auto_bench_calibration.json").read_text())
    search = bench["goals"]["smallest"]["search"]
    report = copy.deepcopy(REPORT)
    report["search"] = search
    chosen = next(c for c in search["candidates"] if c["chosen"])
    model_id = add_model_row(name="all-MiniLM-L6-v2")
    goal = search["goal"]
    preflight = {**bench["goals"]["smallest"]["preflight_at_submit"], "dropped": {"distill_int8": "needs about 40 minutes"}}
    queued = add_job_row(model_id, name="goal-queued", goal=goal, preflight=preflight)
    html = client.get(f"/jobs/{queued}").text
    assert 'id="goal"' in html and "min_fidelity 0.99" in html and "chosen by the search" in html
    assert 'id="preflight"' in html and "distill_int8 (needs about 40 minutes)" in html

    done = add_job_row(model_id, name="goal-done", status="succeeded", progress=1.0, stage="done", report=report,
                       goal=goal, preflight=preflight, recipe=chosen["recipe"])
    html = client.get(f"/jobs/{done}").text
    assert 'id="candidates"' in html and html.count("Run this recipe") == len(search["candidates"])
    assert 'class="chosen"' in html and "chart-search-front" in html
    assert "enableReruns()" in html and f"candidate {search['chosen']} was chosen" in html
    # Each button carries its candidate's recipe, as POST /v1/jobs takes it.
    recipes = [json.loads(value.replace("&#34;", '"').replace("&quot;", '"'))
               for value in re.findall(r"data-rerun='([^']*)'", html)]
    assert recipes == [c["recipe"] for c in search["candidates"]]


def test_a_causal_lm_goal_jobs_page_shows_each_candidates_perplexity(client):  # noqa: F811
    bench = json.loads((Path(__file__).parents[2] / "benchmarks/results/auto_bench_calibration.json").read_text())
    search = copy.deepcopy(bench["goals"]["smallest"]["search"])
    search["original_perplexity"] = 200.0
    for number, candidate in enumerate(search["candidates"]):
        candidate["perplexity"] = 200.0 * (1 + number / 100)
    report = {**copy.deepcopy(REPORT), "search": search}
    job_id = add_job_row(add_model_row(), status="succeeded", progress=1.0, stage="done", report=report,
                         goal=search["goal"])
    table = client.get(f"/jobs/{job_id}").text.split('id="candidates"', 1)[1].split("</table>", 1)[0]
    assert "Perplexity (original 200.000)" in table
    assert "200.000 (+0.00%)" in table and "202.000 (+1.00%)" in table


def test_a_federated_jobs_page_shows_its_rounds_sites_and_their_energy(client):  # noqa: F811
    report = copy.deepcopy(REPORT)
    rounds = [
        {"round": 1, "sites": ["east", "north"], "dropped": [], "loss_before": {"east": 2.0, "north": 1.0},
         "loss_after": {"east": 1.0, "north": 0.5}, "seconds": 12.5},
        {"round": 2, "sites": ["north"], "dropped": ["east"], "loss_before": {"north": 0.5},
         "loss_after": {"north": 0.25}, "seconds": 7.0},
    ]
    details = {
        "aggregation": "fedavg", "rounds_completed": 2, "local_steps": 30, "sites": ["north", "east"],
        "dropped": ["east"], "bytes_sent_to_sites": 270_000_000, "bytes_received_from_sites": 180_000_000,
        "rounds": rounds,
        "site_energy": {"sites": {"north": {"energy_kwh": 0.0012, "co2e_g": 0.07, "country": "FRA"}},
                        "energy_kwh": 0.0012, "co2e_g": 0.07},
    }
    report["steps"] = [{**report["steps"][0], "technique": "federated", "details": details}]
    job_id = add_job_row(add_model_row(), status="succeeded", progress=1.0, stage="done", report=report)
    html = client.get(f"/jobs/{job_id}").text
    section = html.split('id="federated-1"', 1)[1].split("</section>", 1)[0]
    assert "fedavg: 2 rounds of 30 local steps at north, east" in section and "dropped out: east." in section
    assert "270.0 MB to the sites, 180.0 MB back" in section
    assert "1.5 → 0.75" in section and "0.5 → 0.25" in section  # mean losses over the round's sites
    assert "<td>FRA</td>" in section and "0.0012 kWh" in section


def test_a_federated_job_with_differential_privacy_shows_its_epsilon_and_who_was_clipped(client):  # noqa: F811
    report = copy.deepcopy(REPORT)
    record = {"round": 1, "sites": ["north", "south"], "dropped": [], "loss_before": {"north": 1.0, "south": 1.0},
              "loss_after": {"north": 0.5, "south": 0.5}, "seconds": 3.0}
    details = {
        "aggregation": "fedavgm", "server_lr": 1.0, "server_momentum": 0.9, "lr_schedule": "across_rounds",
        "transfer_precision": "float16",
        "rounds_completed": 1, "local_steps": 30, "sites": ["north", "south"], "dropped": [],
        "bytes_sent_to_sites": 1_000_000, "bytes_received_from_sites": 1_000_000, "rounds": [record],
        "differential_privacy": {
            "noise_multiplier": 1.1, "clipping_norm": 0.5, "delta": 1e-5, "epsilon": 4.2173,
            "adjacency": "one site added or removed; every site sampled in every round",
            "clipped": {"1": ["north"]}, "noise_std_per_round": [0.275],
        },
    }
    report["steps"] = [{**report["steps"][0], "technique": "federated", "details": details}]
    job_id = add_job_row(add_model_row(), status="succeeded", progress=1.0, stage="done", report=report)
    section = client.get(f"/jobs/{job_id}").text.split('id="federated-1"', 1)[1].split("</section>", 1)[0]
    assert "Server step 1.0, momentum 0.9." in section and "One learning-rate schedule across the rounds." in section
    assert "(ε = 4.22, δ = 1e-05)" in section and "noise multiplier 1.1 and clipping norm 0.5" in section
    assert "Clipped: round 1: north." in section
    assert "Weights went out, and the sites' changes came back, in half precision." in section
