"""The uploaded models table."""

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAtMixin, IdMixin
from app.tenants.orm import TenantOwnedMixin


class Model(IdMixin, CreatedAtMixin, TenantOwnedMixin, Base):
    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="ready")
    architecture: Mapped[str] = mapped_column(String(200), nullable=False)
    model_type: Mapped[str] = mapped_column(String(100), nullable=False)
    task: Mapped[str] = mapped_column(String(50), nullable=False)
    num_parameters: Mapped[int] = mapped_column(BigInteger, nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    # Where the extracted Hugging Face folder lives in artifact storage.
    storage_key: Mapped[str] = mapped_column(String(500), nullable=False)
