"""A federated site's water and embodied impact: its worker's rates (its WUE, grid and hardware), applied to
each round's energy and time, and booked with its energy stage, which the water and embodied sections then
count from the site's figures; a site that sent none is left out and named."""

import pytest

from tests.engine.test_footprint import _energy, _footprint, _inference, _payback
from workers.engine.energy.schema import SiteImpact
from workers.engine.energy.settings import EnergySettings
from workers.engine.footprint.embodied import embodied_section
from workers.engine.footprint.settings import FootprintSettings
from workers.engine.footprint.site import impact_of, impact_rates
from workers.engine.footprint.water import water_intensity, water_section


def test_a_site_s_rates_from_its_own_settings_apply_to_a_round():
    # 0.036 kg/h of RAM held whole and 1/8 of a 0.288 kg/h CPU: 72 g/h, so 2 g in 100 s.
    settings = FootprintSettings(wue_l_per_kwh=1.8, hardware=_footprint({"cpu": 0.288, "ram": 0.036}))
    rates = impact_rates(EnergySettings(country="FRA", pue=1.25), settings)
    impact = impact_of(rates, 0.5, 100.0)
    assert impact["it_energy_kwh"] == pytest.approx(0.4)
    assert impact["onsite_l"] == pytest.approx(0.4 * 1.8)
    assert impact["offsite_l"] == pytest.approx(0.5 * water_intensity("FRA")[0])
    assert impact["gwp_g"] == pytest.approx(2.0)
    # A site worker without a hardware footprint still rates its water.
    bare = impact_of(impact_rates(EnergySettings(country="FRA"), FootprintSettings()), 0.5, 100.0)
    assert set(bare) == {"it_energy_kwh", "onsite_l", "offsite_l"}


def test_the_water_and_embodied_sections_count_a_site_from_its_figures_and_name_one_without():
    energy = _energy([("load", 10.0, 0.1), ("step_1.federated.site_north", 100.0, 0.5),
                      ("step_1.federated.site_south", 50.0, 0.2)])
    north = SiteImpact(it_energy_kwh=0.4, onsite_l=0.72, offsite_l=3.0, gwp_g=2.0, adp_kgsbeq=1e-9, pe_mj=0.01)
    energy.stages[1] = energy.stages[1].model_copy(update={"site": "north", "site_impact": north})
    energy.stages[2] = energy.stages[2].model_copy(update={"site": "south"})
    energy_settings = EnergySettings(country="DEU")
    footprint = FootprintSettings(wue_l_per_kwh=1.0, hardware=_footprint({"ram": 0.036}))

    water = water_section(energy, _inference(None, None), _payback(False), energy_settings, footprint)
    assert [stage.stage for stage in water.stages] == ["load", "step_1.federated.site_north"]
    assert water.stages[1].onsite_l == 0.72 and water.stages[1].offsite_l == 3.0
    assert water.total.water_l == pytest.approx(0.1 * 1.0 + 0.1 * water_intensity("DEU")[0] + 3.72)
    assert water.site_stages_left_out == ["step_1.federated.site_south"]

    embodied = embodied_section(energy, _inference(None, None), "cpu", 160.0, None, footprint)
    # The worker's RAM (36 g/h) for its own 10 s, and north's own 2 g; south is left out.
    assert [stage.stage for stage in embodied.stages] == ["load", "step_1.federated.site_north"]
    assert embodied.stages[1].gwp_g == 2.0 and embodied.stages[1].pe_mj == 0.01
    assert embodied.total.gwp_g == pytest.approx(0.1 + 2.0)
    assert embodied.site_stages_left_out == ["step_1.federated.site_south"]
