"""label suggestions: when and where each attempt started, and how many there were, so that the reconciler
can hand back one whose worker was lost

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 11:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0017'
down_revision: Union[str, Sequence[str], None] = '0016'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('label_suggestions') as batch:
        batch.add_column(sa.Column('started_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('worker', sa.String(length=255), nullable=True))
        batch.add_column(sa.Column('attempts', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('label_suggestions') as batch:
        batch.drop_column('attempts')
        batch.drop_column('worker')
        batch.drop_column('started_at')
