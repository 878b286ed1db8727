"""Imports every domain's tables so that Base.metadata is complete (for Alembic and tests)."""

from app.artifacts.orm import Artifact  # noqa: F401
from app.checkpoints.orm import JobCheckpoint  # noqa: F401
from app.datasets.orm import Dataset, LabelSuggestion  # noqa: F401
from app.energy.orm import EnergyRecord  # noqa: F401
from app.idempotency.orm import IdempotencyRecord  # noqa: F401
from app.job_logs.orm import JobLogLine  # noqa: F401
from app.jobs.orm import Job  # noqa: F401
from app.models.orm import Model  # noqa: F401
from app.reports.orm import TenantTotals  # noqa: F401
from app.tenants.orm import ApiKey, Tenant  # noqa: F401
from app.webhooks.orm import WebhookDelivery  # noqa: F401
from app.worker_nodes.orm import WorkerNode  # noqa: F401
from app.db.base import Base

metadata = Base.metadata
