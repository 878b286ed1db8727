"""Builds the report's water and embodied sections from the energy figures the job already has. Like the
energy tracker, they never fail the job: a section that cannot be computed is left out (water) or
says why (embodied).
"""

import logging

from workers.engine.energy.schema import EnergyReport, InferenceEnergyReport, PaybackReport
from workers.engine.energy.settings import EnergySettings
from workers.engine.footprint.embodied import embodied_section, unavailable
from workers.engine.footprint.schema import EmbodiedReport, WaterReport
from workers.engine.footprint.settings import FootprintSettings
from workers.engine.footprint.water import water_section

logger = logging.getLogger(__name__)


def footprint_sections(
    energy: EnergyReport,
    inference: InferenceEnergyReport,
    payback: PaybackReport,
    energy_settings: EnergySettings,
    settings: FootprintSettings,
    target_device: str,
    wall_time_s: float,
) -> tuple[WaterReport | None, EmbodiedReport]:
    try:
        water = water_section(energy, inference, payback, energy_settings, settings)
    except Exception:  # noqa: BLE001 - e.g. the grid table's package missing on a worker: the job still succeeds
        logger.warning("the water section could not be computed; the report leaves it out", exc_info=True)
        water = None
    if not energy_settings.enabled:
        # Tracking off is the overhead benchmark's baseline: it must do no footprint work either.
        return water, unavailable("energy tracking is disabled for this job", method="disabled")
    try:
        embodied = embodied_section(
            energy, inference, target_device, wall_time_s, energy_settings.requests_per_day, settings
        )
    except Exception as exc:  # noqa: BLE001 - the same: say why in the section, keep the job
        logger.warning("the embodied section could not be computed", exc_info=True)
        embodied = unavailable(f"the embodied impact could not be computed: {exc}")
    return water, embodied
