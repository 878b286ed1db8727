"""Response shapes of the job log API."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class JobLogLineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    attempt: int = Field(description="1 for the first run; a redelivered job logs under the next number.")
    source: Literal["api", "worker", "engine"] = Field(
        description="api: requests on the job (cancel); worker: what the task did (claims, retries, outcome); "
        "engine: the engine's own log."
    )
    message: str
    created_at: datetime


class JobLogPage(BaseModel):
    lines: list[JobLogLineOut]
    next_after: int = Field(description="Pass as `after` to get only the lines written since this page.")
