"""running totals per tenant

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 23:50:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0013'
down_revision: Union[str, Sequence[str], None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'tenant_totals',
        sa.Column('tenant_id', sa.String(length=32), nullable=False),
        sa.Column('jobs_succeeded', sa.Integer(), nullable=False),
        sa.Column('bytes_saved', sa.BigInteger(), nullable=False),
        sa.Column('energy_kwh', sa.Float(), nullable=False),
        sa.Column('co2e_g', sa.Float(), nullable=False),
        sa.Column('water_l', sa.Float(), nullable=False),
        sa.Column('embodied_gco2e', sa.Float(), nullable=False),
        sa.Column('saving_kwh_per_day', sa.Float(), nullable=False),
        sa.Column('saving_water_l_per_day', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_tenant_totals_tenant_id_tenants'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('tenant_id', name=op.f('pk_tenant_totals')),
    )
    # The totals of the jobs that succeeded before this revision, from the rows they left.
    op.execute("""
        INSERT INTO tenant_totals (tenant_id, jobs_succeeded, bytes_saved, energy_kwh, co2e_g, water_l, embodied_gco2e,
                                   saving_kwh_per_day, saving_water_l_per_day)
        SELECT j.tenant_id, count(*),
               coalesce(sum(CASE WHEN j.original_size_bytes > j.result_size_bytes
                                 THEN j.original_size_bytes - j.result_size_bytes ELSE 0 END), 0),
               coalesce(sum(e.energy_kwh), 0), coalesce(sum(e.co2e_g), 0), coalesce(sum(e.water_l), 0),
               coalesce(sum(e.embodied_gco2e), 0), coalesce(sum(j.saving_kwh_per_day), 0),
               coalesce(sum(j.saving_water_l_per_day), 0)
        FROM jobs j
        LEFT JOIN (SELECT job_id, sum(energy_kwh) AS energy_kwh, sum(co2e_g) AS co2e_g,
                          sum(coalesce(water_onsite_l, 0) + coalesce(water_offsite_l, 0)) AS water_l,
                          sum(coalesce(embodied_gco2e, 0)) AS embodied_gco2e
                   FROM energy_records GROUP BY job_id) e ON e.job_id = j.id
        WHERE j.status = 'succeeded'
        GROUP BY j.tenant_id
    """)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('tenant_totals')
