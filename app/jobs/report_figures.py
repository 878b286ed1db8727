"""The figures of a finished job's report that totals over many jobs need, kept as columns of the job's
row, so the dashboard and the summary sum them in SQL instead of loading every report."""

from typing import Any

FIGURE_COLUMNS = (
    "original_size_bytes", "result_size_bytes", "saving_kwh_per_day", "saving_co2e_g_per_day",
    "saving_water_l_per_day", "saving_embodied_gco2e_per_day",
)


def _per_day(saving_per_million: float | None, counted: bool, rate: float | None) -> float | None:
    """A saving at the deployment's stated rate; None when it does not count."""
    if not counted or not rate or not saving_per_million:
        return None
    return saving_per_million * rate / 1e6


def report_figures(report: dict[str, Any] | None) -> dict[str, Any]:
    """Energy and CO2 count when the energy payback is measurable (a result that costs more counts, as a
    negative saving); water and embodied impact when their own verdict is "saves"."""
    report = report or {}
    payback = report.get("payback") or {}
    rate = (payback.get("deployment") or {}).get("requests_per_day")
    energy_counts = bool(payback.get("measurable")) and bool(payback.get("saving_kwh_per_million"))
    water = (report.get("water") or {}).get("payback") or {}
    embodied = (report.get("embodied") or {}).get("payback") or {}
    return {
        "original_size_bytes": (report.get("original") or {}).get("size_bytes"),
        "result_size_bytes": (report.get("result") or {}).get("size_bytes"),
        "saving_kwh_per_day": _per_day(payback.get("saving_kwh_per_million"), energy_counts, rate),
        "saving_co2e_g_per_day": _per_day(payback.get("saving_co2e_g_per_million"), energy_counts, rate),
        "saving_water_l_per_day": _per_day(water.get("saving_per_million"), water.get("verdict") == "saves", rate),
        "saving_embodied_gco2e_per_day": _per_day(
            embodied.get("saving_per_million"), embodied.get("verdict") == "saves", rate
        ),
    }
