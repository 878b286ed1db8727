"""Where the energy figures come from: the worker's grid and PUE, a CPU power override, and the
deployment the payback is computed for. Kept free of torch and CodeCarbon, like EvalSettings.
"""

from pydantic import BaseModel, ConfigDict, Field, field_validator

_ISO3 = "^[A-Z]{3}$"


class EnergySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        True, description="Track the job's energy. Off does the same work without a tracker (for overhead checks)."
    )
    country: str | None = Field(
        None, pattern=_ISO3, description="ISO 3166-1 alpha-3 code of the worker's grid (e.g. FRA). None: world average."
    )
    pue: float = Field(1.0, ge=1.0, le=5.0, description="Power usage effectiveness of the worker's data centre.")
    cpu_watts_per_core: float | None = Field(
        None, gt=0, le=1000,
        description="CPU watts per logical core at full load. None: CodeCarbon's figure (its TDP table, else 4 W).",
    )
    ram_watts: float | None = Field(None, gt=0, le=10_000, description="RAM watts. None: CodeCarbon's RAM model.")
    gpu_idle_watts: float | None = Field(
        None, ge=0, le=100_000,
        description="What the worker's GPUs draw doing nothing, read at worker start. Splits each stage's GPU energy "
        "into active and idle. None: no split (no GPU, or not measured).",
    )
    gpu_idle_source: str | None = Field(None, max_length=300, description="How gpu_idle_watts was obtained.")
    deployment_country: str | None = Field(
        None, pattern=_ISO3, description="Grid the compressed model will serve on. None: same as country."
    )
    deployment_pue: float | None = Field(
        None, ge=1.0, le=5.0, description="PUE where the model will serve. None: same as pue."
    )
    requests_per_day: float | None = Field(None, gt=0, description="Expected inferences per day, for break-even days.")

    @field_validator("country", "deployment_country", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        # Codes are looked up upper-case; accept "fra" rather than reject it.
        return value.strip().upper() if isinstance(value, str) else value
