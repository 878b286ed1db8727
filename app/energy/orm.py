"""Energy, water and embodied impact of each stage of a job, one row per stage, so totals are a SUM in SQL."""

from sqlalchemy import Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAtMixin, IdMixin


class EnergyRecord(IdMixin, CreatedAtMixin, Base):
    __tablename__ = "energy_records"
    # A redelivered job cannot count its energy twice.
    __table_args__ = (UniqueConstraint("job_id", "stage"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True)
    stage: Mapped[str] = mapped_column(String(100), nullable=False)
    # The recipe step a stage belongs to (1-based), or NULL for load, evaluation and packaging.
    step_index: Mapped[int | None] = mapped_column(Integer)
    technique: Mapped[str | None] = mapped_column(String(50))
    duration_s: Mapped[float] = mapped_column(Float, nullable=False)
    cpu_kwh: Mapped[float] = mapped_column(Float, nullable=False)
    gpu_kwh: Mapped[float] = mapped_column(Float, nullable=False)
    ram_kwh: Mapped[float] = mapped_column(Float, nullable=False)
    energy_kwh: Mapped[float] = mapped_column(Float, nullable=False)
    co2e_g: Mapped[float] = mapped_column(Float, nullable=False)
    method: Mapped[str] = mapped_column(String(20), nullable=False)
    # The stage's water (on site: cooling; off site: generating its electricity) and the embodied impact
    # of the hardware it held; NULL for stages recorded before these figures existed.
    water_onsite_l: Mapped[float | None] = mapped_column(Float)
    water_offsite_l: Mapped[float | None] = mapped_column(Float)
    embodied_gco2e: Mapped[float | None] = mapped_column(Float)
