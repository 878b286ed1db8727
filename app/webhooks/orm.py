"""Webhook deliveries: one row per job event for a job that has a webhook_url, written in the same
transaction as the state change it reports (an outbox), so no event is lost if the broker is down."""

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAtMixin, IdMixin
from app.tenants.orm import TenantOwnedMixin

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


class WebhookDelivery(IdMixin, CreatedAtMixin, TenantOwnedMixin, Base):
    __tablename__ = "webhook_deliveries"
    # One delivery per event of a job: a repeated state write cannot send an event twice.
    __table_args__ = (UniqueConstraint("job_id", "event_key"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True)
    event: Mapped[str] = mapped_column(String(50), nullable=False)  # e.g. "job.succeeded"
    # The event and the attempt it belongs to ("running:2"): a requeued job reports "running" again.
    event_key: Mapped[str] = mapped_column(String(80), nullable=False)
    url: Mapped[str] = mapped_column(String(2000), nullable=False)
    # The exact body, fixed when the event happened; each attempt signs and sends these bytes.
    payload: Mapped[dict] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default=PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
