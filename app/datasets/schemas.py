"""Response shapes of the datasets API."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    filename: str
    num_rows: int
    columns: list[str]
    size_bytes: int
    sha256: str
    created_at: datetime
