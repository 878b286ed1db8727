"""water and embodied impact per energy stage

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 23:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0011'
down_revision: Union[str, Sequence[str], None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # Nullable: stages recorded before these figures existed have none, and SUM skips them.
    with op.batch_alter_table('energy_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('water_onsite_l', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('water_offsite_l', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('embodied_gco2e', sa.Float(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('energy_records', schema=None) as batch_op:
        batch_op.drop_column('embodied_gco2e')
        batch_op.drop_column('water_offsite_l')
        batch_op.drop_column('water_onsite_l')
