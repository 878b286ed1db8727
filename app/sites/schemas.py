"""Request and response shapes of the sites API."""

from pathlib import PurePosixPath, PureWindowsPath

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workers.engine.evaluation.dataset_format import ALLOWED_COLUMNS, DATASET_SUFFIXES, REQUIRED_COLUMN

# What workers.engine.federated.config.SITE_NAME accepts, in words.
SITE_NAME_RULE = "a site name is 1 to 63 lowercase letters, digits or '-', starting with a letter or digit"


class SiteDatasetIn(BaseModel):
    """What a site says of a dataset it keeps: `compresso site add-dataset` reads these from the file,
    with the same checks as an upload, before it registers them."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "name": "ward notes", "filename": "notes.jsonl", "num_rows": 5000, "num_labelled": 5000,
            "columns": ["text", "label"], "size_bytes": 1843200,
            "sha256": "d2f1c0b9a8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170615243",
        }]},
    )

    name: str = Field(min_length=1, max_length=200)
    filename: str = Field(
        min_length=1, max_length=255, description="The file's name at the site: a .jsonl or .csv, as uploads take."
    )
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="The file's SHA-256, 64 hex characters.")
    num_rows: int = Field(ge=1)
    num_labelled: int = Field(ge=0, description="Rows with a label.")
    columns: list[str] = Field(
        min_length=1, max_length=len(ALLOWED_COLUMNS),
        description=f"The file's columns: {REQUIRED_COLUMN} and any of {', '.join(ALLOWED_COLUMNS[1:])}.",
    )
    size_bytes: int = Field(ge=1)

    @field_validator("filename")
    @classmethod
    def _dataset_file(cls, value: str) -> str:
        if PurePosixPath(value).name != value or PureWindowsPath(value).name != value:
            raise ValueError("give the file's name alone, without a folder")
        if not value.lower().endswith(DATASET_SUFFIXES):
            raise ValueError(f"the file must be a {' or '.join(DATASET_SUFFIXES)}, the formats uploads take")
        return value

    @field_validator("sha256")
    @classmethod
    def _lowercase(cls, value: str) -> str:
        return value.lower()

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, value: list[str]) -> list[str]:
        unknown = [column for column in value if column not in ALLOWED_COLUMNS]
        if unknown:
            raise ValueError(f"unknown column {unknown[0]!r}; the columns are {', '.join(ALLOWED_COLUMNS)}")
        if len(set(value)) != len(value):
            raise ValueError("each column may appear once")
        if REQUIRED_COLUMN not in value:
            raise ValueError(f"every dataset has a {REQUIRED_COLUMN!r} column")
        return [column for column in ALLOWED_COLUMNS if column in value]  # the order uploads record

    @model_validator(mode="after")
    def _labels_fit(self) -> "SiteDatasetIn":
        if self.num_labelled > self.num_rows:
            raise ValueError(f"num_labelled ({self.num_labelled}) is more than num_rows ({self.num_rows})")
        if self.num_labelled and "label" not in self.columns:
            raise ValueError("num_labelled counts labelled rows, but columns has no 'label'")
        return self


class SiteOut(BaseModel):
    site: str
    datasets: int = Field(description="The tenant's datasets held by this site.")
    queue: str = Field(description="The queue the site's worker consumes (compresso worker --site NAME).")
    worker_alive: bool = Field(
        description="Whether a worker consuming that queue has sent a heartbeat within "
        "COMPRESSO_HEARTBEAT_STALE_SECONDS: without one, a federated step cannot reach the site."
    )
