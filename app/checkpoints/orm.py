"""One row per stored checkpoint: the job's model after its recipe's first `step` steps, or, for a checkpoint
taken inside step `step` (its manifest says how far the step got), the model before it and the step's own
progress."""

from sqlalchemy import BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAtMixin, IdMixin


class JobCheckpoint(IdMixin, CreatedAtMixin, Base):
    __tablename__ = "job_checkpoints"
    # One checkpoint per step of a recipe: a later attempt that saves the same step replaces it, and so does
    # the step's own end, or a later checkpoint inside it.
    __table_args__ = (UniqueConstraint("job_id", "key", "step"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True)
    # workers.engine.checkpoints.settings.checkpoint_key: the recipe, device, evaluation and inputs it is valid for.
    key: Mapped[str] = mapped_column(String(64), nullable=False)
    step: Mapped[int] = mapped_column(Integer, nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    storage_key: Mapped[str] = mapped_column(String(500), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # Checked before an attempt uses it: a changed or damaged file is never handed to the engine.
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
