"""Response shapes of the models API."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class ModelOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={"examples": [{
            "id": "3f2c9e0a5b7d4c1e8a6f0b2d4e6c8a1f", "name": "all-MiniLM-L6-v2", "status": "ready",
            "architecture": "BertModel", "model_type": "bert", "task": "feature-extraction",
            "num_parameters": 22713216, "size_bytes": 90868376,
            "sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "created_at": "2026-11-28T17:58:04Z",
        }]},
    )

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
