"""`alembic upgrade head` on an empty Postgres gives exactly the ORM's schema, and downgrades cleanly."""

import uuid

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.cli import alembic_config
from app.db.models import metadata
from tests.conftest import create_database, drop_database, postgres_url


def test_upgrade_head_matches_the_orm_and_downgrades():
    name = f"compresso_migrations_{uuid.uuid4().hex[:8]}"
    create_database(name)
    engine = create_engine(postgres_url(name))
    try:
        config = alembic_config()
        config.attributes["database_url"] = postgres_url(name)
        config.attributes["configure_logging"] = False
        command.upgrade(config, "head")
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
        assert {"models", "datasets", "jobs", "artifacts"} <= set(inspect(engine).get_table_names())

        command.downgrade(config, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()
        drop_database(name)
