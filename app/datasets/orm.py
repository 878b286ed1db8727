"""The uploaded datasets table, and the label suggestions asked for on them.

A dataset row is immutable: labelling rows makes a new version (a new row and file, with parent_id and
the first version's id as lineage_id), so a job that names a dataset id always reads the same rows.
A site-held dataset (app.sites) is a row alone: its file stays on the site's host, and its storage_key
is a site:// reference that no central storage resolves.
"""

from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAtMixin, IdMixin
from app.tenants.orm import TenantOwnedMixin


class Dataset(IdMixin, CreatedAtMixin, TenantOwnedMixin, Base):
    __tablename__ = "datasets"

    name: Mapped[str] = mapped_column(String(200), nullable=False)
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    num_rows: Mapped[int] = mapped_column(Integer, nullable=False)
    # Rows with a label; None for datasets uploaded before it was counted.
    num_labelled: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    storage_key: Mapped[str] = mapped_column(String(500), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"), nullable=True)
    lineage_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    # The site whose host holds the rows; None for a dataset uploaded here, in central storage.
    site: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)


# A suggestion's life: queued (sent to a CPU worker), running, then succeeded or failed.
SUGGESTION_QUEUED, SUGGESTION_RUNNING, SUGGESTION_SUCCEEDED, SUGGESTION_FAILED = (
    "queued", "running", "succeeded", "failed"
)


class LabelSuggestion(IdMixin, CreatedAtMixin, TenantOwnedMixin, Base):
    """The rows of a dataset version worth labelling next for a classifier built on a model."""

    __tablename__ = "label_suggestions"

    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False, index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), nullable=False)
    n: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=SUGGESTION_QUEUED)
    # workers.engine.label_suggestions.Suggestions.as_dict(): method, counts, classes and the rows.
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The running attempt: when it started and on which Celery node, so that the reconciler hands back a
    # suggestion whose worker stopped sending heartbeats.
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
