"""Response shapes of the datasets API."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class DatasetOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={"examples": [{
            "id": "9b1d3f5a7c9e4b2d8f0a1c3e5b7d9f1a", "name": "support tickets", "filename": "tickets.jsonl",
            "num_rows": 1200, "columns": ["text", "label", "slice"], "size_bytes": 183422,
            "sha256": "d2f1c0b9a8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170615243",
            "created_at": "2026-11-28T17:58:04Z",
        }]},
    )

    id: str
    name: str
    filename: str
    num_rows: int
    columns: list[str]
    size_bytes: int
    sha256: str
    created_at: datetime
