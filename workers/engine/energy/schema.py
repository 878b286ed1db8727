"""The report's sustainability sections (schema_version 1): `energy` (the job's own use), `inference`
(energy per 1,000 inferences before and after) and `payback`; workers.engine.report includes them.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# How a figure was obtained: "measured" from energy counters (RAPL, NVML), "estimated" from a power
# model times time, "mixed" when some components were measured and others estimated.
Method = Literal["measured", "estimated", "mixed"]
SectionMethod = Literal["measured", "estimated", "mixed", "unavailable", "disabled"]
ComponentMethod = Literal["measured", "estimated", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiteImpact(_Strict):
    """A federated site's water and embodied impact for its stage, from its own worker's WUE, grid and hardware
    (workers.engine.footprint.site): the job's worker knows none of them."""

    it_energy_kwh: float = Field(description="The stage's energy_kwh / the site's PUE.")
    onsite_l: float = Field(description="it_energy_kwh x the site's WUE.")
    offsite_l: float = Field(description="energy_kwh x the water intensity of the site's grid.")
    gwp_g: float | None = Field(None, description="Embodied g CO2e of the site's hardware for the stage's time; null "
                                "when the site's worker had no hardware footprint.")
    adp_kgsbeq: float | None = None
    pe_mj: float | None = None


class StageEnergy(_Strict):
    stage: str = Field(
        description="load, evaluate_original, step_<n>.<technique>, package, evaluate_result, ...; a federated step's "
        "training at each site is step_<n>.federated.site_<name>."
    )
    site: str | None = Field(
        None, description="The site whose worker measured this stage (a federated step's local training), with its "
        "own PUE and grid (co2e_g is on that grid); null: the worker that ran the job."
    )
    duration_s: float
    cpu_kwh: float
    gpu_kwh: float
    ram_kwh: float
    energy_kwh: float = Field(description="cpu_kwh + gpu_kwh + ram_kwh; every kWh figure includes the PUE.")
    co2e_g: float = Field(description="energy_kwh x carbon_intensity_g_per_kwh of the worker's grid.")
    method: Method
    gpu_idle_kwh: float | None = Field(
        None, description="The part of gpu_kwh an idle GPU draws over the stage's duration (gpu_idle_watts x time, "
        "at most gpu_kwh); null when the idle power was not measured."
    )
    gpu_active_kwh: float | None = Field(None, description="gpu_kwh - gpu_idle_kwh: what the work itself added.")
    site_impact: SiteImpact | None = Field(
        None, description="A site's stage: its water and embodied impact, from the site's own settings; null when "
        "the site did not send them (the water and embodied sections then leave the stage out)."
    )


class EnergyTotal(_Strict):
    """Sum of the stages, component by component; energy_kwh = cpu_kwh + gpu_kwh + ram_kwh."""

    duration_s: float
    cpu_kwh: float
    gpu_kwh: float
    ram_kwh: float
    energy_kwh: float
    co2e_g: float
    gpu_idle_kwh: float | None = None
    gpu_active_kwh: float | None = None


class ComponentMethods(_Strict):
    cpu: ComponentMethod
    gpu: ComponentMethod
    ram: ComponentMethod


class EnergyInputs(_Strict):
    """Everything an auditor needs to recompute the figures; null where the tracker never said."""

    tracker: str
    tracker_version: str | None
    tracking_mode: str
    cpu_model: str | None = None
    cpu_power_w: float | None = Field(None, description="Full-load CPU power assumed; null when measured.")
    cpu_power_source: str | None = None
    ram_power_w: float | None = Field(None, description="Highest RAM power used by any stage.")
    ram_power_source: str | None = None
    gpu_model: str | None = None
    gpu_count: int | None = None
    components: ComponentMethods | None = None
    gpu_idle_watts: float | None = Field(None, description="The GPUs' idle draw the split uses, read at worker start.")
    gpu_idle_source: str | None = None
    power_model: str
    country: str | None = Field(description="ISO alpha-3 of the worker's grid; null: world average.")
    carbon_intensity_g_per_kwh: float
    intensity_source: str
    pue: float
    pue_applied_by: str


class EnergyReport(_Strict):
    method: SectionMethod
    error: str | None = Field(description="Why the figures are unavailable; the job itself still succeeded.")
    inputs: EnergyInputs
    stages: list[StageEnergy]
    total: EnergyTotal


class InferenceSide(_Strict):
    runtime: str
    device: str
    kwh_per_1000_mean: float
    kwh_per_1000_std: float = Field(description="Sample standard deviation over the runs.")
    kwh_per_1000_min: float
    kwh_per_1000_max: float
    runs: list[float] = Field(description="kWh per 1,000 inferences of each run.")
    run_seconds: list[float]


class InferenceEnergyReport(_Strict):
    """Device energy (no PUE: payback applies the deployment's) of the same padded batch, run
    `batches_per_run` times per run; one untimed warm-up batch per model comes first."""

    device: str
    batch_size: int
    sequence_length: int
    inferences_per_run: int
    batches_per_run: int
    repeats: int
    threads: int
    method: SectionMethod
    error: str | None
    wall_time_s: float = Field(description="Both models, warm-up included, tracked or not.")
    original: InferenceSide | None
    result: InferenceSide | None


class DeploymentReport(_Strict):
    country: str | None
    carbon_intensity_g_per_kwh: float
    intensity_source: str
    pue: float
    requests_per_day: float | None


class PaybackReport(_Strict):
    """When the job's own energy is repaid by the cheaper inferences of its result."""

    measurable: bool = Field(description="The difference of means exceeds its noise band.")
    verdict: Literal["saves energy", "costs more energy", "no measurable saving", "not measured"]
    explanation: str
    difference_kwh_per_1000: float | None = Field(description="original mean - result mean (device energy).")
    noise_band_kwh_per_1000: float | None = Field(
        description="2 x sqrt(sd_o^2/n_o + sd_r^2/n_r): about 95% of the difference of means."
    )
    saving_kwh_per_million: float | None = Field(description="Facility energy at the deployment PUE; negative: costs more.")
    saving_co2e_g_per_million: float | None
    break_even_inferences: float | None = Field(description="job_energy_kwh / saving per inference.")
    break_even_days: float | None
    carbon_break_even_inferences: float | None = Field(
        description="job_co2e_g / CO2 saved per inference: differs from the energy figure when the grids differ."
    )
    carbon_break_even_days: float | None
    job_energy_kwh: float | None = Field(
        description="energy.total.energy_kwh: every stage, this measurement included, at the worker's PUE."
    )
    job_co2e_g: float | None
    job_gpu_idle_kwh: float | None = Field(
        None, description="The part of job_energy_kwh the GPU drew while idle; counted in the payback all the same."
    )
    deployment: DeploymentReport


class GenerationEnergyReport(_Strict):
    """Causal LMs on a torch target: device energy (no PUE) per 1,000 generated tokens of the same greedy
    generate for both models, and the job's payback counted in generated tokens (its
    break_even_inferences are tokens; days are not given, as the deployment's rate is in requests)."""

    device: str
    batch_size: int
    prompt_tokens: int
    new_tokens: int
    tokens_per_run: int
    repeats: int
    wall_time_s: float = Field(description="Both models, warm-ups included.")
    original: InferenceSide | None = Field(description="kwh_per_1000_* are per 1,000 generated tokens.")
    result: InferenceSide | None
    payback: PaybackReport
