"""Builds the report's water and embodied sections from the energy figures the job already has."""

from workers.engine.energy.schema import EnergyReport, InferenceEnergyReport, PaybackReport
from workers.engine.energy.settings import EnergySettings
from workers.engine.footprint.embodied import embodied_section, unavailable
from workers.engine.footprint.schema import EmbodiedReport, WaterReport
from workers.engine.footprint.settings import FootprintSettings
from workers.engine.footprint.water import water_section


def footprint_sections(
    energy: EnergyReport,
    inference: InferenceEnergyReport,
    payback: PaybackReport,
    energy_settings: EnergySettings,
    settings: FootprintSettings,
    target_device: str,
    wall_time_s: float,
) -> tuple[WaterReport, EmbodiedReport]:
    water = water_section(energy, inference, payback, energy_settings, settings)
    if not energy_settings.enabled:
        # Tracking off is the overhead benchmark's baseline: it must do no footprint work either.
        return water, unavailable("energy tracking is disabled for this job", method="disabled")
    embodied = embodied_section(
        energy, inference, target_device, wall_time_s, energy_settings.requests_per_day, settings
    )
    return water, embodied
