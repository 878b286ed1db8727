"""A federated site's own water and embodied impact for the training it measured: the site's worker knows
its data centre's PUE and WUE, its grid's water intensity and its hardware; the job's worker knows none of
them. The site's worker turns them into rates (impact_rates, with EcoLogits' grid table), its client applies
them to each round's measured energy and time (impact_of), and the job books the sum with the site's energy
stage (StageEnergy.site_impact)."""

from workers.engine.energy.settings import EnergySettings
from workers.engine.footprint.embodied import embodied_for
from workers.engine.footprint.settings import FootprintSettings
from workers.engine.footprint.water import water_site

# Sent beside a round's energy in Flower's metrics, each name with this prefix.
IMPACT_PREFIX = "impact_"
EMBODIED = ("gwp_g", "adp_kgsbeq", "pe_mj")


def impact_rates(energy: EnergySettings, footprint: FootprintSettings) -> dict[str, float]:
    """Per kWh and per hour, from the site worker's own settings; embodied rates only with a hardware footprint."""
    site = water_site(energy.country, energy.pue, footprint.wue_l_per_kwh, footprint.wue_source)
    rates = {"pue": site.pue, "wue_l_per_kwh": site.wue_l_per_kwh, "water_l_per_kwh": site.water_intensity_l_per_kwh}
    if footprint.hardware is not None:
        per_hour = embodied_for(footprint.hardware, 3600.0)
        rates.update({f"{name}_per_hour": per_hour[name] for name in EMBODIED if per_hour[name] is not None})
    return rates


def impact_of(rates: dict[str, float], facility_kwh: float, seconds: float) -> dict[str, float]:
    """it_energy_kwh, onsite_l, offsite_l (and gwp_g, adp_kgsbeq, pe_mj where rated) of a round that drew
    `facility_kwh` (PUE included) in `seconds`: the water formula of workers.engine.footprint.water."""
    it_energy = facility_kwh / rates["pue"]
    impact = {"it_energy_kwh": it_energy, "onsite_l": it_energy * rates["wue_l_per_kwh"],
              "offsite_l": facility_kwh * rates["water_l_per_kwh"]}
    impact.update({name: rates[f"{name}_per_hour"] * seconds / 3600.0 for name in EMBODIED
                   if f"{name}_per_hour" in rates})
    return impact
