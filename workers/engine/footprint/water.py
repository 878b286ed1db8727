"""Water, after Li et al. (2023), "Making AI Less Thirsty": on-site water is the IT energy times the data
centre's WUE (cooling), off-site water is the facility energy (IT energy x PUE) times the water the grid
consumes per kWh generated. Both follow from the energy section, stage by stage, and from the measured
device energy per 1,000 inferences.

The grid's water per kWh comes from the table EcoLogits ships (`wue` of each electricity mix), so it
is offline and versioned with the installed package, like the carbon intensity from CodeCarbon's.
"""

import math
from functools import lru_cache
from importlib.metadata import version

from workers.engine.energy.schema import EnergyReport, InferenceEnergyReport, PaybackReport
from workers.engine.energy.settings import EnergySettings
from workers.engine.footprint.payback import unit_payback
from workers.engine.footprint.schema import (
    StageWater,
    WaterInference,
    WaterPerThousand,
    WaterReport,
    WaterSite,
    WaterTotal,
)
from workers.engine.footprint.settings import FootprintSettings

FORMULA = (
    "on-site L = IT energy (energy_kwh / pue) x WUE; off-site L = energy_kwh (PUE included) x the grid's water "
    "intensity; per 1,000 inferences the same with the measured device energy and the deployment's PUE, WUE and grid "
    "(Li et al. 2023, 'Making AI Less Thirsty')"
)
_TABLE = "data/electricity_mixes.json"
_WORLD = "WOR"
_WORLD_FALLBACK = "electricity-mix-wue-world"


@lru_cache(maxsize=1)
def _mixes():  # noqa: ANN202
    from ecologits.electricity_mix_repository import electricity_mixes

    return electricity_mixes


def water_intensity(country_iso3: str | None) -> tuple[float, str]:
    """(litres consumed per kWh generated on the grid, where the figure comes from)."""
    mixes, table = _mixes(), f"EcoLogits {version('ecologits')} {_TABLE}"
    if country_iso3 is None:
        return mixes.find_electricity_mix(_WORLD).wue, f"world average (no country configured): {table}"
    code = country_iso3.strip().upper()
    mix = mixes.find_electricity_mix(code)
    if mix is None:
        # Worker start already refused codes CodeCarbon does not know, and EcoLogits knows all of those.
        return mixes.find_electricity_mix(_WORLD).wue, f"world average ({code} is not in {table})"
    if any(getattr(warning, "code", None) == _WORLD_FALLBACK for warning in mix.warnings):
        return mix.wue, f"world average ({code} has no figure of its own in {table})"
    return mix.wue, f"{code}: {table}"


def water_site(country: str | None, pue: float, wue: float, wue_source: str) -> WaterSite:
    intensity, source = water_intensity(country)
    return WaterSite(
        country=country, water_intensity_l_per_kwh=intensity, water_intensity_source=source,
        wue_l_per_kwh=wue, wue_source=wue_source, pue=pue,
    )


def litres(facility_kwh: float, site: WaterSite) -> tuple[float, float]:
    """(on-site, off-site) litres for energy that already includes the site's PUE."""
    return facility_kwh / site.pue * site.wue_l_per_kwh, facility_kwh * site.water_intensity_l_per_kwh


def _per_thousand(device_kwh_per_1000: float, site: WaterSite) -> WaterPerThousand:
    onsite, offsite = litres(device_kwh_per_1000 * site.pue, site)
    return WaterPerThousand(onsite_l=onsite, offsite_l=offsite, water_l=onsite + offsite)


def deployment_site(energy: EnergySettings, footprint: FootprintSettings) -> WaterSite:
    if footprint.deployment_wue_l_per_kwh is not None:
        wue, source = footprint.deployment_wue_l_per_kwh, footprint.deployment_wue_source or "the job's deployment.wue"
    else:
        wue, source = footprint.wue_l_per_kwh, footprint.wue_source
    pue = energy.deployment_pue if energy.deployment_pue is not None else energy.pue
    return water_site(energy.deployment_country or energy.country, pue, wue, source)


def water_section(
    energy: EnergyReport,
    inference: InferenceEnergyReport,
    payback: PaybackReport,
    energy_settings: EnergySettings,
    settings: FootprintSettings,
) -> WaterReport:
    worker = water_site(energy_settings.country, energy_settings.pue, settings.wue_l_per_kwh, settings.wue_source)
    stages = []
    for stage in energy.stages:
        if stage.site is not None:
            # Measured on a site's machine: the site's own WUE and grid gave its water (site_impact); a site
            # that sent none is left out (site_stages_left_out).
            if (impact := stage.site_impact) is not None:
                stages.append(StageWater(stage=stage.stage, it_energy_kwh=impact.it_energy_kwh, onsite_l=impact.onsite_l,
                                         offsite_l=impact.offsite_l, water_l=impact.onsite_l + impact.offsite_l))
            continue
        onsite, offsite = litres(stage.energy_kwh, worker)
        stages.append(StageWater(
            stage=stage.stage, it_energy_kwh=stage.energy_kwh / worker.pue, onsite_l=onsite, offsite_l=offsite,
            water_l=onsite + offsite,
        ))
    onsite_total = math.fsum(stage.onsite_l for stage in stages)
    offsite_total = math.fsum(stage.offsite_l for stage in stages)
    tracked = energy.method not in ("unavailable", "disabled")
    deployment = deployment_site(energy_settings, settings)
    original = _per_thousand(inference.original.kwh_per_1000_mean, deployment) if inference.original else None
    result = _per_thousand(inference.result.kwh_per_1000_mean, deployment) if inference.result else None
    return WaterReport(
        method=energy.method,
        formula=FORMULA,
        worker=worker,
        stages=stages,
        total=WaterTotal(onsite_l=onsite_total, offsite_l=offsite_total, water_l=onsite_total + offsite_total),
        inference=WaterInference(deployment=deployment, original=original, result=result),
        site_stages_left_out=[stage.stage for stage in energy.stages if stage.site is not None and stage.site_impact is None],
        payback=unit_payback(
            "L of water",
            onsite_total + offsite_total if tracked else None,
            original.water_l - result.water_l if original and result else None,
            # Water per inference is the measured energy times constants: it saves exactly when energy does.
            payback.measurable,
            "water per inference is the measured energy times constant factors, and the energy saving is "
            f"'{payback.verdict}'." if original and result else "inference energy was not measured.",
            energy_settings.requests_per_day,
        ),
    )
