"""The log of a job: what the worker did and what the engine wrote, line by line, in the database.

Kept in the database rather than in the attempt's work folder, so the API reads it from any host
while the job runs, and it survives the folder's removal when the job ends.
"""

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, utcnow

WORKER, ENGINE, API = "worker", "engine", "api"


class JobLogLine(Base):
    __tablename__ = "job_log_lines"

    # An increasing integer: the cursor a reader passes back as `after` to get only the new lines.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    source: Mapped[str] = mapped_column(String(10), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
