"""job checkpoints: each stored per-step checkpoint of a running job, with its sha256, so that another
attempt resumes after the last step saved

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-08 09:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0018'
down_revision: Union[str, Sequence[str], None] = '0017'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'job_checkpoints',
        sa.Column('job_id', sa.String(length=32), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('step', sa.Integer(), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('storage_key', sa.String(length=500), nullable=False),
        sa.Column('size_bytes', sa.BigInteger(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_checkpoints_job_id_jobs'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_job_checkpoints')),
        sa.UniqueConstraint('job_id', 'key', 'step', name=op.f('uq_job_checkpoints_job_id')),
    )
    with op.batch_alter_table('job_checkpoints') as batch:
        batch.create_index(batch.f('ix_job_checkpoints_job_id'), ['job_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('job_checkpoints') as batch:
        batch.drop_index(batch.f('ix_job_checkpoints_job_id'))
    op.drop_table('job_checkpoints')
