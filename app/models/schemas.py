"""Response shapes of the models API."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: str
    architecture: str
    model_type: str
    task: str
    num_parameters: int
    size_bytes: int
    sha256: str
    created_at: datetime
