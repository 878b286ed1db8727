"""Tenants own everything a client creates (models, datasets, jobs and what jobs produce); API keys
authenticate a client as one tenant."""

import secrets
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAtMixin, IdMixin

# The tenant of every request while authentication is off (the embedded default on loopback);
# created by the migration, which also gives it every row that existed before tenants.
DEFAULT_TENANT_ID = "default"


class Tenant(IdMixin, CreatedAtMixin, Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    # Signs this tenant's webhook deliveries (HMAC-SHA256); readable by the tenant, rotatable.
    webhook_secret: Mapped[str] = mapped_column(
        String(64), nullable=False, default=lambda: secrets.token_hex(32)
    )
    # Per-tenant overrides of the limits in the settings; NULL means the settings' value.
    max_concurrent_jobs: Mapped[int | None] = mapped_column(Integer)
    max_storage_bytes: Mapped[int | None] = mapped_column(BigInteger)


class ApiKey(IdMixin, CreatedAtMixin, Base):
    __tablename__ = "api_keys"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True)
    name: Mapped[str | None] = mapped_column(String(100))
    # The key's public part, shown in listings and used to find the row; the secret part is only hashed.
    prefix: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TenantOwnedMixin:
    """A row that belongs to one tenant; every API query on it filters by this column."""

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="RESTRICT"), nullable=False, index=True)
