"""job report figures as columns; jobs indexed by tenant and creation time

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 23:40:00

"""
import json
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0012'
down_revision: Union[str, Sequence[str], None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_FLOATS = ('saving_kwh_per_day', 'saving_co2e_g_per_day', 'saving_water_l_per_day', 'saving_embodied_gco2e_per_day')
_BATCH = 500


def _figures(report: dict) -> dict:
    """The same figures app.jobs.report_figures computes, as of this revision (a migration keeps its own copy)."""
    payback = report.get('payback') or {}
    rate = (payback.get('deployment') or {}).get('requests_per_day')

    def per_day(saving, counted):
        return saving * rate / 1e6 if counted and rate and saving else None

    energy_counts = bool(payback.get('measurable')) and bool(payback.get('saving_kwh_per_million'))
    water = (report.get('water') or {}).get('payback') or {}
    embodied = (report.get('embodied') or {}).get('payback') or {}
    return {
        'original_size_bytes': (report.get('original') or {}).get('size_bytes'),
        'result_size_bytes': (report.get('result') or {}).get('size_bytes'),
        'saving_kwh_per_day': per_day(payback.get('saving_kwh_per_million'), energy_counts),
        'saving_co2e_g_per_day': per_day(payback.get('saving_co2e_g_per_million'), energy_counts),
        'saving_water_l_per_day': per_day(water.get('saving_per_million'), water.get('verdict') == 'saves'),
        'saving_embodied_gco2e_per_day': per_day(embodied.get('saving_per_million'), embodied.get('verdict') == 'saves'),
    }


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('original_size_bytes', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('result_size_bytes', sa.BigInteger(), nullable=True))
        for name in _FLOATS:
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))
        batch_op.create_index('ix_jobs_tenant_created', ['tenant_id', 'created_at', 'id'], unique=False)
    jobs = sa.table('jobs', sa.column('id', sa.String), sa.column('report', sa.JSON),
                    sa.column('original_size_bytes', sa.BigInteger), sa.column('result_size_bytes', sa.BigInteger),
                    *(sa.column(name, sa.Float) for name in _FLOATS))
    connection = op.get_bind()
    rows = connection.execute(sa.select(jobs.c.id, jobs.c.report).where(jobs.c.report.is_not(None))).all()
    for start in range(0, len(rows), _BATCH):
        for job_id, report in rows[start:start + _BATCH]:
            report = json.loads(report) if isinstance(report, str) else report
            connection.execute(jobs.update().where(jobs.c.id == job_id).values(**_figures(report or {})))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_tenant_created')
        for name in ('original_size_bytes', 'result_size_bytes', *_FLOATS):
            batch_op.drop_column(name)
