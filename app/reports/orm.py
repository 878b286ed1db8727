"""Running totals of each tenant's finished jobs, added to in the transaction that stores a job's results,
so the dashboard's all-time figures are one row to read however many jobs there are."""

from sqlalchemy import BigInteger, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base


class TenantTotals(Base):
    __tablename__ = "tenant_totals"

    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    jobs_succeeded: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    bytes_saved: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    energy_kwh: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    co2e_g: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    water_l: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    embodied_gco2e: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    saving_kwh_per_day: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    saving_water_l_per_day: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)


TOTAL_FIELDS = (
    "jobs_succeeded", "bytes_saved", "energy_kwh", "co2e_g", "water_l", "embodied_gco2e", "saving_kwh_per_day",
    "saving_water_l_per_day",
)
