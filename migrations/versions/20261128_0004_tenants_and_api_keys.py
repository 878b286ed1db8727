"""tenants and api keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 18:03:39.522876

Every existing model, dataset and job goes to the tenant "default", which is also the tenant of
every request while authentication is off.

"""
from datetime import UTC, datetime
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

DEFAULT_TENANT_ID = 'default'


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('tenants',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('max_concurrent_jobs', sa.Integer(), nullable=True),
    sa.Column('max_storage_bytes', sa.BigInteger(), nullable=True),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenants')),
    sa.UniqueConstraint('name', name=op.f('uq_tenants_name'))
    )
    tenants = sa.table('tenants', sa.column('id', sa.String), sa.column('name', sa.String),
                       sa.column('created_at', sa.DateTime(timezone=True)))
    op.bulk_insert(tenants, [{'id': DEFAULT_TENANT_ID, 'name': DEFAULT_TENANT_ID, 'created_at': datetime.now(UTC)}])
    op.create_table('api_keys',
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=True),
    sa.Column('prefix', sa.String(length=32), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_api_keys_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('prefix', name=op.f('uq_api_keys_prefix'))
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_tenant_id'), ['tenant_id'], unique=False)

    with op.batch_alter_table('datasets', schema=None) as batch_op:
        # The server default fills the existing rows; it is dropped right after.
        batch_op.add_column(sa.Column('tenant_id', sa.String(length=32), nullable=False,
                                      server_default=DEFAULT_TENANT_ID))
        batch_op.create_index(batch_op.f('ix_datasets_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_datasets_tenant_id_tenants'), 'tenants', ['tenant_id'], ['id'], ondelete='RESTRICT')
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.alter_column('tenant_id', server_default=None)

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        # The server default fills the existing rows; it is dropped right after.
        batch_op.add_column(sa.Column('tenant_id', sa.String(length=32), nullable=False,
                                      server_default=DEFAULT_TENANT_ID))
        batch_op.create_index(batch_op.f('ix_jobs_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_jobs_tenant_id_tenants'), 'tenants', ['tenant_id'], ['id'], ondelete='RESTRICT')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.alter_column('tenant_id', server_default=None)

    with op.batch_alter_table('models', schema=None) as batch_op:
        # The server default fills the existing rows; it is dropped right after.
        batch_op.add_column(sa.Column('tenant_id', sa.String(length=32), nullable=False,
                                      server_default=DEFAULT_TENANT_ID))
        batch_op.create_index(batch_op.f('ix_models_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_models_tenant_id_tenants'), 'tenants', ['tenant_id'], ['id'], ondelete='RESTRICT')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.alter_column('tenant_id', server_default=None)



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_models_tenant_id_tenants'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_models_tenant_id'))
        batch_op.drop_column('tenant_id')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_jobs_tenant_id_tenants'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_jobs_tenant_id'))
        batch_op.drop_column('tenant_id')

    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_datasets_tenant_id_tenants'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_datasets_tenant_id'))
        batch_op.drop_column('tenant_id')

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_tenant_id'))

    op.drop_table('api_keys')
    op.drop_table('tenants')
