"""a job's goal and its pre-flight estimate

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 01:20:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0014'
down_revision: Union[str, Sequence[str], None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('goal', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('preflight', sa.JSON(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('preflight')
        batch.drop_column('goal')
