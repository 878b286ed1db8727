"""The report's footprint sections beyond CO2: `water` (on-site cooling and off-site generation, per
stage, per job and per 1,000 inferences) and `embodied` (the worker's hardware manufacture, amortised
over the time the job held it), each with its inputs and its payback.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from workers.engine.energy.schema import SectionMethod


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UnitPayback(_Strict):
    """After how many inferences the result's savings in one unit repay what the job itself cost in it."""

    unit: str
    measurable: bool
    verdict: Literal["saves", "costs more", "no measurable saving", "not measured"]
    explanation: str
    job_amount: float | None = Field(description="What the job cost, in `unit`.")
    saving_per_million: float | None = Field(description="Per million inferences where the model serves; negative: costs more.")
    break_even_inferences: float | None
    break_even_days: float | None


# --- water ---------------------------------------------------------------------------------------

class WaterSite(_Strict):
    """Where water is counted: a data centre's cooling (WUE) and its grid's generation (water intensity)."""

    country: str | None = Field(description="ISO alpha-3 of the grid; null: world average.")
    water_intensity_l_per_kwh: float = Field(description="Water consumed generating one kWh on this grid (off-site).")
    water_intensity_source: str
    wue_l_per_kwh: float = Field(description="On-site water per kWh of IT energy (Water Usage Effectiveness).")
    wue_source: str
    pue: float


class StageWater(_Strict):
    stage: str
    it_energy_kwh: float = Field(description="energy_kwh / pue: what the IT equipment drew.")
    onsite_l: float = Field(description="it_energy_kwh x wue.")
    offsite_l: float = Field(description="energy_kwh (facility, PUE included) x water intensity.")
    water_l: float


class WaterTotal(_Strict):
    onsite_l: float
    offsite_l: float
    water_l: float


class WaterPerThousand(_Strict):
    onsite_l: float
    offsite_l: float
    water_l: float


class WaterInference(_Strict):
    """Per 1,000 inferences where the model serves, from the measured device energy."""

    deployment: WaterSite
    original: WaterPerThousand | None
    result: WaterPerThousand | None


class WaterReport(_Strict):
    method: SectionMethod = Field(description="The energy section's: water is derived from its figures.")
    formula: str
    worker: WaterSite
    stages: list[StageWater]
    total: WaterTotal
    inference: WaterInference
    payback: UnitPayback
    site_stages_left_out: list[str] = Field(
        default_factory=list, description="Energy stages measured at a federated step's sites that sent no water "
        "figures (their WUE and grid are not known to this worker), not counted here. A site that sent them is a "
        "stage like the others, from its own settings."
    )


# --- embodied ------------------------------------------------------------------------------------

class EmbodiedAmount(_Strict):
    gwp_g: float = Field(description="Global warming potential, g CO2e.")
    adp_kgsbeq: float | None = Field(description="Abiotic resource depletion, kg Sb eq; null where Boavizta has none.")
    pe_mj: float | None = Field(description="Primary energy, MJ; null where Boavizta has none.")


class EmbodiedComponent(_Strict):
    component: Literal["cpu", "ram", "gpu"]
    description: str
    share: float = Field(description="The fraction of this component one job holds.")
    share_reason: str
    per_hour_whole: EmbodiedAmount = Field(description="Boavizta's allocation to one hour of the whole component's life.")
    gwp_g_per_hour_min: float | None = None
    gwp_g_per_hour_max: float | None = None
    assumptions: dict[str, str] = Field(description="What Boavizta completed from its reference data, and from where.")
    warnings: list[str]


class EmbodiedInputs(_Strict):
    tool: str
    tool_version: str
    lifetime_hours: float
    lifetime_source: str
    allocation: str
    components: list[EmbodiedComponent]
    left_out: str = Field(description="What the figures do not include, and why.")
    per_hour: EmbodiedAmount = Field(description="Sum over the components, each times its share: one job-hour.")


class StageEmbodied(EmbodiedAmount):
    stage: str
    duration_s: float


class EmbodiedTotal(EmbodiedAmount):
    duration_s: float


class EmbodiedPerThousand(EmbodiedAmount):
    seconds: float = Field(description="Mean measured seconds of 1,000 inferences.")
    seconds_std: float


class EmbodiedInference(_Strict):
    """Per 1,000 inferences: the components the target uses, for the time the measured runs took."""

    components: list[str]
    original: EmbodiedPerThousand | None
    result: EmbodiedPerThousand | None


class EmbodiedReport(_Strict):
    method: Literal["estimated", "unavailable", "disabled"]
    error: str | None = Field(description="Why the figures are unavailable; the job itself still succeeded.")
    inputs: EmbodiedInputs | None
    stages: list[StageEmbodied]
    total: EmbodiedTotal | None
    inference: EmbodiedInference | None
    payback: UnitPayback
    site_stages_left_out: list[str] = Field(
        default_factory=list, description="Energy stages measured at a federated step's sites whose worker had no "
        "hardware footprint (their hardware is not known to this worker), not counted here. A site that had one "
        "is a stage like the others, charged for its own hardware."
    )
