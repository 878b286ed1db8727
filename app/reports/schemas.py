"""Response shape of the sustainability summary."""

from datetime import datetime

from pydantic import BaseModel, Field


class EnergyTotals(BaseModel):
    cpu_kwh: float
    gpu_kwh: float
    ram_kwh: float
    energy_kwh: float
    co2e_g: float


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


class ProjectedSavings(BaseModel):
    jobs_counted: int = Field(description="Succeeded jobs with a measurable saving and a stated request rate.")
    kwh_per_day: float
    co2e_g_per_day: float
    kwh_per_year: float
    co2e_kg_per_year: float


class Summary(BaseModel):
    since: datetime | None
    until: datetime | None
    jobs_by_status: dict[str, int]
    energy: EnergyTotals = Field(description="What the jobs of the window used themselves.")
    projected_savings: ProjectedSavings = Field(description="Savings of the compressed models at the stated rates.")
    jobs: list[JobPayback]
