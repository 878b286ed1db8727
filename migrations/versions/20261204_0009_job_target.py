"""job target

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 20:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# Every job before this one was built for, and measured on, onnxruntime on the CPU.
_DEFAULT = '{"runtime": "onnxruntime", "device": "cpu"}'


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('target', sa.JSON(), nullable=False, server_default=sa.text(f"'{_DEFAULT}'")))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('target')
