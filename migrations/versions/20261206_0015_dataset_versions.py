"""dataset versions (labelling makes a new one) and label suggestions

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 08:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0015'
down_revision: Union[str, Sequence[str], None] = '0014'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('datasets') as batch:
        batch.add_column(sa.Column('num_labelled', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('version', sa.Integer(), nullable=False, server_default='1'))
        batch.add_column(sa.Column('parent_id', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('lineage_id', sa.String(length=32), nullable=True))
        batch.create_foreign_key(
            batch.f('fk_datasets_parent_id_datasets'), 'datasets', ['parent_id'], ['id'], ondelete='SET NULL'
        )
    # Every dataset uploaded so far is the first version of its own lineage.
    op.execute("UPDATE datasets SET lineage_id = id")
    with op.batch_alter_table('datasets') as batch:
        batch.alter_column('lineage_id', existing_type=sa.String(length=32), nullable=False)
        batch.create_index(batch.f('ix_datasets_lineage_id'), ['lineage_id'], unique=False)
    op.create_table(
        'label_suggestions',
        sa.Column('dataset_id', sa.String(length=32), nullable=False),
        sa.Column('model_id', sa.String(length=32), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('result', sa.JSON(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('tenant_id', sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_label_suggestions_dataset_id_datasets'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_label_suggestions_model_id_models'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_label_suggestions_tenant_id_tenants'),
                                ondelete='RESTRICT'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_label_suggestions')),
    )
    with op.batch_alter_table('label_suggestions') as batch:
        batch.create_index(batch.f('ix_label_suggestions_dataset_id'), ['dataset_id'], unique=False)
        batch.create_index(batch.f('ix_label_suggestions_tenant_id'), ['tenant_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('label_suggestions')
    with op.batch_alter_table('datasets') as batch:
        batch.drop_index(batch.f('ix_datasets_lineage_id'))
        batch.drop_constraint(batch.f('fk_datasets_parent_id_datasets'), type_='foreignkey')
        batch.drop_column('lineage_id')
        batch.drop_column('parent_id')
        batch.drop_column('version')
        batch.drop_column('num_labelled')
