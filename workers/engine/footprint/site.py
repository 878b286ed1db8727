"""A federated site's own water and embodied impact for the training it measured: the site's worker knows
its data centre's PUE and WUE, its grid's water intensity and its hardware; the job's worker knows none of
them. The site's worker turns them into rates (impact_rates, with EcoLogits' grid table), its client applies
them to each round's measured energy and time (impact_of), and the job books the sum with the site's energy
stage (StageEnergy.site_impact)."""

from workers.engine.energy.settings import EnergySettings
from workers.engine.footprint.embodied import embodied_for
from workers.engine.footprint.settings import FootprintSettings
from workers.engine.footprint.schema import WaterSite
from workers.engine.footprint.water import litres, water_site

# Sent beside a round's energy in Flower's metrics, each name with this prefix.
IMPACT_PREFIX = "impact_"
EMBODIED = ("gwp_g", "adp_kgsbeq", "pe_mj")


def impact_rates(energy: EnergySettings, footprint: FootprintSettings) -> dict:
    """The site's water site (PUE, WUE, grid) and, with a hardware footprint, its embodied rates per hour."""
    site = water_site(energy.country, energy.pue, footprint.wue_l_per_kwh, footprint.wue_source)
    rates = {"water_site": site.model_dump()}
    if footprint.hardware is not None:
        per_hour = embodied_for(footprint.hardware, 3600.0)
        rates.update({f"{name}_per_hour": per_hour[name] for name in EMBODIED if per_hour[name] is not None})
    return rates


def impact_of(rates: dict, facility_kwh: float, seconds: float) -> dict[str, float]:
    """it_energy_kwh, onsite_l, offsite_l (and gwp_g, adp_kgsbeq, pe_mj where rated) of a round that drew
    `facility_kwh` (PUE included) in `seconds`."""
    site = WaterSite(**rates["water_site"])
    onsite, offsite = litres(facility_kwh, site)
    impact = {"it_energy_kwh": facility_kwh / site.pue, "onsite_l": onsite, "offsite_l": offsite}
    impact.update({name: rates[f"{name}_per_hour"] * seconds / 3600.0 for name in EMBODIED
                   if f"{name}_per_hour" in rates})
    return impact
