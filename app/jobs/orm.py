"""The compression jobs table: the source of truth for a job's state, whatever the broker holds."""

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.artifacts.orm import Artifact
from app.db.base import Base, CreatedAtMixin, IdMixin
from app.tenants.orm import TenantOwnedMixin

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
TIMED_OUT = "timed_out"  # stopped by its soft or hard time limit
JOB_STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, TIMED_OUT)
FINISHED_STATUSES = (SUCCEEDED, FAILED, CANCELLED, TIMED_OUT)
DEFAULT_TARGET = {"runtime": "onnxruntime", "device": "cpu"}


class Job(IdMixin, CreatedAtMixin, TenantOwnedMixin, Base):
    __tablename__ = "jobs"
    # A tenant's jobs newest first (every list and page) without sorting them all.
    __table_args__ = (Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),)

    name: Mapped[str | None] = mapped_column(String(200))
    # Jobs outlive the uploads they used: deleting a finished job's model keeps the job and its report.
    model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"), index=True)
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"), index=True)
    device: Mapped[str] = mapped_column(String(10), nullable=False)
    queue: Mapped[str] = mapped_column(String(20), nullable=False)
    # Where the result runs and is measured ({runtime, device}); older jobs: onnxruntime on the cpu.
    target: Mapped[dict] = mapped_column(JSON, nullable=False, default=lambda: dict(DEFAULT_TARGET))
    # A goal job's recipe has no steps until its search has chosen one; then it is the chosen recipe.
    recipe: Mapped[dict] = mapped_column(JSON, nullable=False)
    # The goal a job searches for instead of a recipe, and the API's pre-flight estimate for it.
    goal: Mapped[dict | None] = mapped_column(JSON)
    preflight: Mapped[dict | None] = mapped_column(JSON)
    # The preset the recipe came from, when the job named one instead of a recipe.
    preset: Mapped[str | None] = mapped_column(String(100))
    evaluation: Mapped[dict] = mapped_column(JSON, nullable=False)
    # Where the compressed model will serve ({country, requests_per_day}), for the payback figures.
    deployment: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    # Receives a signed POST on every state change (see app.webhooks).
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    # {soft_seconds, hard_seconds} of this job; NULL: the settings' defaults.
    time_limits: Mapped[dict | None] = mapped_column(JSON)
    # The job's MLflow options and, once it has finished, the run it logged (or why it could not).
    mlflow: Mapped[dict | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default=QUEUED, index=True)
    stage: Mapped[str | None] = mapped_column(String(100))
    progress: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    report: Mapped[dict | None] = mapped_column(JSON)
    # Set once the broker has accepted the job's message; NULL means the reconciler must send it.
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Refreshed by the worker while the job runs; a stale one means the worker was lost.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Figures of the report that totals over many jobs sum in SQL (app.jobs.report_figures), set with it.
    original_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    result_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    saving_kwh_per_day: Mapped[float | None] = mapped_column(Float)
    saving_co2e_g_per_day: Mapped[float | None] = mapped_column(Float)
    saving_water_l_per_day: Mapped[float | None] = mapped_column(Float)
    saving_embodied_gco2e_per_day: Mapped[float | None] = mapped_column(Float)

    artifacts: Mapped[list[Artifact]] = relationship(
        order_by=Artifact.created_at, cascade="all, delete-orphan", lazy="selectin"
    )
