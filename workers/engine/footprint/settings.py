"""What the water and embodied figures need besides the energy settings: the data centres' WUE, and
the worker's hardware footprint, which the worker computes once at start.
"""

from pydantic import BaseModel, ConfigDict, Field

from workers.engine.footprint.hardware import HardwareFootprint

DEFAULT_WUE_L_PER_KWH = 1.8
DEFAULT_WUE_SOURCE = (
    "default: 1.8 L/kWh, the average on-site water consumption of US data centres in Shehabi et al. (2016), "
    "United States Data Center Energy Usage Report, LBNL-1005775"
)


class FootprintSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    wue_l_per_kwh: float = Field(
        DEFAULT_WUE_L_PER_KWH, ge=0, le=100,
        description="On-site water of the worker's data centre per kWh of IT energy. 0: no evaporative cooling.",
    )
    wue_source: str = Field(DEFAULT_WUE_SOURCE, max_length=500)
    deployment_wue_l_per_kwh: float | None = Field(
        None, ge=0, le=100, description="WUE where the model will serve. None: the worker's."
    )
    deployment_wue_source: str | None = Field(None, max_length=500)
    hardware: HardwareFootprint | None = Field(None, description="The worker's Boavizta footprint; None: not computed.")
    hardware_error: str | None = Field(None, max_length=2000, description="Why `hardware` is missing.")
