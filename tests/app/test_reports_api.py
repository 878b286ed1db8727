"""The sustainability summary and the Prometheus metrics, over rows set up in the real database."""

from datetime import UTC, datetime, timedelta

import pytest

from tests.app.conftest import upload
from tests.rows import add_energy_row, add_job_row, add_model_row

NOW = datetime.now(UTC)


def unit_payback(verdict: str, saving: float | None) -> dict:
    return {"payback": {"verdict": verdict, "saving_per_million": saving, "break_even_inferences": 500.0}}


def payback(measurable: bool, saving_kwh: float | None, saving_g: float | None, rate: float | None) -> dict:
    return {
        "water": unit_payback("saves" if measurable else "no measurable saving", 3.0 if measurable else None),
        "embodied": unit_payback("saves" if measurable else "no measurable saving", 0.2 if measurable else None),
        "payback": {
            "measurable": measurable,
            "verdict": "saves energy" if measurable else "no measurable saving",
            "saving_kwh_per_million": saving_kwh,
            "saving_co2e_g_per_million": saving_g,
            "break_even_inferences": 1000.0 if measurable else None,
            "break_even_days": 0.5 if measurable and rate else None,
            "deployment": {"requests_per_day": rate},
        }
    }


@pytest.fixture
def jobs(client):
    model_id = add_model_row()
    old = add_job_row(model_id, status="succeeded", created_at=NOW - timedelta(days=10),
                      report=payback(True, 2.0, 800.0, 1_000_000))
    recent = add_job_row(model_id, status="succeeded", created_at=NOW - timedelta(hours=1),
                         report=payback(True, 0.5, 100.0, 2_000_000))
    noisy = add_job_row(model_id, status="succeeded", created_at=NOW - timedelta(hours=2),
                        report=payback(False, None, None, 5_000))
    failed = add_job_row(model_id, status="failed", created_at=NOW - timedelta(hours=3))
    add_energy_row(old, "load", cpu_kwh=0.001, ram_kwh=0.0005, co2e_g=0.6)
    add_energy_row(recent, "load", cpu_kwh=0.002, ram_kwh=0.001, co2e_g=1.2,
                   water_onsite_l=0.01, water_offsite_l=0.02, embodied_gco2e=0.5)
    add_energy_row(recent, "step_1.quantize", cpu_kwh=0.004, ram_kwh=0.001, co2e_g=2.0,
                   water_onsite_l=0.03, water_offsite_l=0.04, embodied_gco2e=1.5)
    add_energy_row(noisy, "load", cpu_kwh=0.0001, ram_kwh=0.0001, co2e_g=0.1)
    return {"old": old, "recent": recent, "noisy": noisy, "failed": failed}


def test_summary_of_all_jobs(client, jobs):
    body = client.get("/v1/reports/summary").json()
    assert body["jobs_by_status"]["succeeded"] == 3
    assert body["jobs_by_status"]["failed"] == 1
    assert body["energy"]["energy_kwh"] == pytest.approx(0.0015 + 0.003 + 0.005 + 0.0002)
    assert body["energy"]["co2e_g"] == pytest.approx(0.6 + 1.2 + 2.0 + 0.1)
    assert body["energy"]["cpu_kwh"] + body["energy"]["ram_kwh"] == pytest.approx(body["energy"]["energy_kwh"])
    savings = body["projected_savings"]
    # Only measurable savings with a stated rate count: 2.0 kWh/M at 1M/day + 0.5 kWh/M at 2M/day.
    assert savings["jobs_counted"] == 2
    assert savings["kwh_per_day"] == pytest.approx(2.0 + 1.0)
    assert savings["co2e_g_per_day"] == pytest.approx(800.0 + 200.0)
    assert savings["kwh_per_year"] == pytest.approx(3.0 * 365)
    by_id = {job["id"]: job for job in body["jobs"]}
    assert by_id[jobs["noisy"]]["verdict"] == "no measurable saving"
    assert by_id[jobs["recent"]]["energy_kwh"] == pytest.approx(0.008)
    assert by_id[jobs["failed"]]["energy_kwh"] is None
    # Water and embodied impact: summed from the stage rows; rows from before them count as nothing.
    assert body["energy"]["water_onsite_l"] == pytest.approx(0.04)
    assert body["energy"]["water_l"] == pytest.approx(0.1)
    assert body["energy"]["embodied_gco2e"] == pytest.approx(2.0)
    assert by_id[jobs["recent"]]["water_l"] == pytest.approx(0.1)
    assert by_id[jobs["recent"]]["embodied_gco2e"] == pytest.approx(2.0)
    assert by_id[jobs["old"]]["water_l"] is None
    assert by_id[jobs["recent"]]["water_verdict"] == "saves"
    # 3 L/M at 1M/day + 3 L/M at 2M/day; 0.2 g/M likewise.
    assert savings["water_jobs_counted"] == 2 and savings["water_l_per_day"] == pytest.approx(9.0)
    assert savings["water_l_per_year"] == pytest.approx(9.0 * 365)
    assert savings["embodied_gco2e_per_day"] == pytest.approx(0.6)


def test_summary_time_window(client, jobs):
    since = (NOW - timedelta(days=1)).isoformat()
    body = client.get("/v1/reports/summary", params={"since": since}).json()
    assert {job["id"] for job in body["jobs"]} == {jobs["recent"], jobs["noisy"], jobs["failed"]}
    assert body["energy"]["energy_kwh"] == pytest.approx(0.003 + 0.005 + 0.0002)
    assert body["projected_savings"]["kwh_per_day"] == pytest.approx(1.0)
    until = (NOW - timedelta(days=1)).replace(tzinfo=None).isoformat()  # a zoneless time is UTC
    body = client.get("/v1/reports/summary", params={"until": until}).json()
    assert [job["id"] for job in body["jobs"]] == [jobs["old"]]


def test_summary_rejects_an_empty_window(client):
    response = client.get("/v1/reports/summary", params={"since": NOW.isoformat(), "until": NOW.isoformat()})
    assert response.status_code == 422
    assert "since" in response.json()["detail"]


def test_metrics_report_jobs_energy_and_uploads(client, jobs, tiny_encoder_zip):
    before = upload_bytes_total(client.get("/metrics").text)
    upload(client, tiny_encoder_zip)
    text = client.get("/metrics").text
    assert 'compresso_jobs{status="succeeded"} 3.0' in text
    assert 'compresso_jobs{status="failed"} 1.0' in text
    assert "compresso_job_duration_seconds_count" in text
    cpu = metric_value(text, 'compresso_job_energy_kwh_total{component="cpu",method="estimated"}')
    assert cpu == pytest.approx(0.001 + 0.002 + 0.004 + 0.0001)
    assert metric_value(text, 'compresso_job_water_litres_total{site="onsite"}') == pytest.approx(0.04)
    assert metric_value(text, 'compresso_job_water_litres_total{site="offsite"}') == pytest.approx(0.06)
    assert metric_value(text, "compresso_job_embodied_gco2e_total") == pytest.approx(2.0)
    assert upload_bytes_total(text) - before >= tiny_encoder_zip.stat().st_size


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


def upload_bytes_total(text: str) -> float:
    try:
        return metric_value(text, 'compresso_upload_bytes_total{kind="model"}')
    except AssertionError:
        return 0.0
