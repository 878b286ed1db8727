"""site-held datasets: the site whose host keeps a dataset's rows

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 09:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0016'
down_revision: Union[str, Sequence[str], None] = '0015'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('datasets') as batch:
        batch.add_column(sa.Column('site', sa.String(length=64), nullable=True))
        batch.create_index(batch.f('ix_datasets_site'), ['site'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('datasets') as batch:
        batch.drop_index(batch.f('ix_datasets_site'))
        batch.drop_column('site')
