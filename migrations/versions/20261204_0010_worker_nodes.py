"""worker nodes

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 20:30:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'worker_nodes',
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('queues', sa.String(length=200), nullable=False),
        sa.Column('gpu', sa.String(length=200), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_worker_nodes')),
    )
    with op.batch_alter_table('worker_nodes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_worker_nodes_last_seen_at'), ['last_seen_at'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('worker_nodes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_worker_nodes_last_seen_at'))
    op.drop_table('worker_nodes')
