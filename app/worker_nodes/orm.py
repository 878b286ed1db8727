"""The workers that are alive: each Celery node writes its row on a heartbeat, so the API can route a
job by what is actually running (a `"device": "auto"` job goes to a live GPU worker)."""

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, utcnow


class WorkerNode(Base):
    __tablename__ = "worker_nodes"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # Celery's node name, e.g. gpu0@host
    queues: Mapped[str] = mapped_column(String(200), nullable=False)  # comma-separated, as the worker was started
    gpu: Mapped[str | None] = mapped_column(String(200))  # the CUDA device it is pinned to, if any
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False, index=True)
