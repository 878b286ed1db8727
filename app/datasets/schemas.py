"""Response shapes of the datasets API."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class DatasetOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={"examples": [{
            "id": "9b1d3f5a7c9e4b2d8f0a1c3e5b7d9f1a", "name": "support tickets", "filename": "tickets.jsonl",
            "num_rows": 1200, "num_labelled": 350, "columns": ["text", "label", "slice"], "size_bytes": 183422,
            "version": 2, "parent_id": "4c2e8a6b0d1f4e3a9b7c5d2e1f0a3b4c", "lineage_id": "4c2e8a6b0d1f4e3a9b7c5d2e1f0a3b4c",
            "sha256": "d2f1c0b9a8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170615243",
            "site": None, "created_at": "2026-11-28T17:58:04Z",
        }]},
    )

    id: str
    name: str
    filename: str
    num_rows: int
    num_labelled: int | None = Field(description="Rows with a label (null for datasets uploaded before it was counted).")
    columns: list[str]
    size_bytes: int
    sha256: str
    version: int = Field(description="1 for an upload; each labelling or new upload of a version adds one.")
    parent_id: str | None = Field(description="The version this one was made from; null for a first version.")
    lineage_id: str = Field(description="The first version's id, shared by every version of this dataset.")
    site: str | None = Field(
        None, description="The site whose host holds the rows (POST /v1/sites/{site}/datasets); null for a dataset "
        "uploaded here. A site's rows never reach this server: only federated steps train on them, at the site.",
    )
    created_at: datetime


class RowLabel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    row: int = Field(ge=0, description="0-based row number in the dataset file, as suggest-labels returns it.")
    label: str | None = Field(
        min_length=1, max_length=200, description="The row's label; null removes the label the row had."
    )


class LabelsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[RowLabel] = Field(min_length=1, max_length=100_000)


class SuggestionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(
        description="The uploaded encoder or classifier the classifier will be fine-tuned from: rows are judged on "
        "its embeddings."
    )


class SuggestedRow(BaseModel):
    row: int = Field(description="0-based row number in the dataset file.")
    text: str
    uncertainty: float | None = Field(
        description="1 - (p1 - p2) under the probe or the model: 1 where its two likeliest classes tie."
    )
    predicted: str | None = Field(description="The likeliest class, to pre-fill a labelling form.")


class SuggestionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    dataset_id: str
    model_id: str
    n: int
    status: str = Field(description="queued, running, succeeded or failed.")
    method: str | None = Field(
        None, description="probe (a classifier fitted on the labelled rows), model (the model's own classes) or "
        "diversity (no label yet: rows spread over the embedding space)."
    )
    labelled_rows: int | None = None
    unlabelled_rows: int | None = None
    classes: list[str] = Field(default_factory=list)
    rows: list[SuggestedRow] = Field(default_factory=list, description="The rows to label, most useful first.")
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None

    @classmethod
    def of(cls, suggestion) -> "SuggestionOut":  # noqa: ANN001 - app.datasets.orm.LabelSuggestion
        result = suggestion.result or {}
        return cls.model_validate({
            **{key: getattr(suggestion, key) for key in (
                "id", "dataset_id", "model_id", "n", "status", "error", "created_at", "finished_at")},
            **{key: result.get(key) for key in ("method", "labelled_rows", "unlabelled_rows")},
            "classes": result.get("classes", []), "rows": result.get("rows", []),
        })
