"""The first response to each Idempotency-Key, so that a retried request gets it back instead of
creating a second job or upload."""

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAtMixin, IdMixin


class IdempotencyRecord(IdMixin, CreatedAtMixin, Base):
    __tablename__ = "idempotency_records"
    # The constraint is what makes two concurrent requests with one key create one thing.
    __table_args__ = (UniqueConstraint("tenant_id", "endpoint", "key"),)

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    endpoint: Mapped[str] = mapped_column(String(100), nullable=False)  # e.g. "POST /v1/jobs"
    key: Mapped[str] = mapped_column(String(255), nullable=False)
    # SHA-256 of what the request asked for: the same key with another request is refused.
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    status_code: Mapped[int] = mapped_column(Integer, nullable=False)
    response: Mapped[dict] = mapped_column(JSON, nullable=False)
