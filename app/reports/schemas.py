"""Response shape of the sustainability summary."""

from datetime import datetime

from pydantic import BaseModel, Field


class EnergyTotals(BaseModel):
    cpu_kwh: float
    gpu_kwh: float
    ram_kwh: float
    energy_kwh: float
    co2e_g: float
    water_onsite_l: float = Field(description="Cooling water at the workers' data centre (energy x WUE).")
    water_offsite_l: float = Field(description="Water consumed generating the jobs' electricity.")
    water_l: float
    embodied_gco2e: float = Field(description="Manufacture of the hardware the jobs held, amortised (Boavizta).")


class JobPayback(BaseModel):
    id: str
    name: str | None
    status: str
    created_at: datetime
    energy_kwh: float | None = Field(description="The job's own energy; null until its records are stored.")
    co2e_g: float | None
    measurable: bool | None = Field(description="Whether the compressed model saves measurably; null until it ran.")
    verdict: str | None
    saving_kwh_per_million: float | None
    saving_co2e_g_per_million: float | None
    break_even_inferences: float | None
    break_even_days: float | None
    requests_per_day: float | None
    water_l: float | None = Field(description="The job's own water, on and off site; null before it was recorded.")
    embodied_gco2e: float | None
    water_verdict: str | None
    water_saving_l_per_million: float | None
    water_break_even_inferences: float | None
    embodied_verdict: str | None
    embodied_saving_gco2e_per_million: float | None
    embodied_break_even_inferences: float | None


class ProjectedSavings(BaseModel):
    jobs_counted: int = Field(description="Succeeded jobs with a measurable saving and a stated request rate.")
    kwh_per_day: float
    co2e_g_per_day: float
    kwh_per_year: float
    co2e_kg_per_year: float
    water_jobs_counted: int = Field(description="Succeeded jobs with a measurable water saving and a stated rate.")
    water_l_per_day: float
    water_l_per_year: float
    embodied_jobs_counted: int
    embodied_gco2e_per_day: float


class Summary(BaseModel):
    since: datetime | None
    until: datetime | None
    jobs_by_status: dict[str, int]
    energy: EnergyTotals = Field(description="What the jobs of the window used themselves.")
    projected_savings: ProjectedSavings = Field(description="Savings of the compressed models at the stated rates.")
    jobs: list[JobPayback]
