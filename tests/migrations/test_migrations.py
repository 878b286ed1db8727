"""`alembic upgrade head` on an empty Postgres gives exactly the ORM's schema, and downgrades cleanly."""

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text

from app.cli import alembic_config
from app.db.models import metadata
from tests.conftest import create_database, drop_database, postgres_url


@contextmanager
def empty_database() -> Iterator[tuple[object, Engine]]:
    """An empty Postgres database and the Alembic config aimed at it; dropped afterwards."""
    name = f"compresso_migrations_{uuid.uuid4().hex[:8]}"
    create_database(name)
    engine = create_engine(postgres_url(name))
    try:
        config = alembic_config()
        config.attributes["database_url"] = postgres_url(name)
        config.attributes["configure_logging"] = False
        yield config, engine
    finally:
        engine.dispose()
        drop_database(name)


def test_upgrade_head_matches_the_orm_and_downgrades():
    with empty_database() as (config, engine):
        command.upgrade(config, "head")
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
        assert {"models", "datasets", "jobs", "artifacts"} <= set(inspect(engine).get_table_names())

        command.downgrade(config, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}


def test_0012_and_0013_fill_the_figures_and_totals_of_existing_jobs():
    with empty_database() as (config, engine):
        command.upgrade(config, "0011")
        report = {
            "original": {"size_bytes": 1000}, "result": {"size_bytes": 250},
            "payback": {"measurable": True, "saving_kwh_per_million": 2.0, "saving_co2e_g_per_million": 50.0,
                        "deployment": {"requests_per_day": 500_000}},
            "water": {"payback": {"verdict": "saves", "saving_per_million": 4.0}},
            "embodied": {"payback": {"verdict": "no measurable saving", "saving_per_million": 0.1}},
        }
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO jobs (id, created_at, tenant_id, device, queue, recipe, evaluation, deployment, status,"
                " progress, attempts, cancel_requested, report) VALUES ('j1', now(), 'default', 'cpu', 'cpu', '{}',"
                " '{}', '{}', 'succeeded', 1.0, 1, false, :report)"), {"report": json.dumps(report)})
        command.upgrade(config, "head")
        with engine.connect() as connection:
            row = connection.execute(text(
                "SELECT original_size_bytes, result_size_bytes, saving_kwh_per_day, saving_co2e_g_per_day,"
                " saving_water_l_per_day, saving_embodied_gco2e_per_day FROM jobs WHERE id = 'j1'")).one()
            totals = connection.execute(text(
                "SELECT jobs_succeeded, bytes_saved, saving_kwh_per_day, saving_water_l_per_day FROM tenant_totals"
                " WHERE tenant_id = 'default'")).one()
        assert tuple(row) == (1000, 250, 1.0, 25.0, 2.0, None)
        assert tuple(totals) == (1, 750, 1.0, 2.0)  # 0013 counts the jobs that succeeded before it
