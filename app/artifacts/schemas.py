"""Response shape of a job's artifact."""

from pydantic import BaseModel, ConfigDict


class ArtifactOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={"examples": [{
            "id": "5e7a9c1b3d5f4a6c8e0b2d4f6a8c0e2b", "kind": "model", "filename": "model.zip",
            "size_bytes": 23011842, "sha256": "0b414dafc8bb2205c1d3e5f7a9b1c3d5e7f9a1b3c5d7e9f1a3b5c7d9e1f3a5b7",
        }]},
    )

    id: str
    kind: str
    filename: str
    size_bytes: int
    sha256: str
