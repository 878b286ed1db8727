"""A Postgres database created as SQL_ASCII (a C-locale cluster's default, and many an old server's) works:
psycopg returns such a database's text as bytes unless the client says UTF8, and SQLAlchemy then fails on
the server's version string before the first query."""

import uuid

import psycopg
from alembic import command
from sqlalchemy import text

from app.cli import alembic_config
from app.db.session import make_engine
from tests.conftest import POSTGRES_ADMIN_URL, drop_database, postgres_url


def test_migrations_and_text_round_trip_on_a_sql_ascii_database():
    name = f"compresso_sqlascii_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE \"{name}\" ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' "
                           "TEMPLATE template0")
    engine = make_engine(postgres_url(name))
    try:
        config = alembic_config()
        config.attributes["database_url"] = postgres_url(name)
        config.attributes["configure_logging"] = False
        command.upgrade(config, "head")
        with engine.begin() as connection:
            assert connection.execute(text("show server_encoding")).scalar() == "SQL_ASCII"
            assert connection.execute(text("select 'modèle ✓'")).scalar() == "modèle ✓"
    finally:
        engine.dispose()
        drop_database(name)
