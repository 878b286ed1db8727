"""Test-wide settings: a fresh Postgres database per run, Redis as the broker, a temporary data dir.

The environment is set before any compresso module reads its settings.
"""

import os
import tempfile
import uuid
from pathlib import Path

import pytest

POSTGRES_ADMIN_URL = os.environ.get("COMPRESSO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("COMPRESSO_TEST_REDIS", "redis://127.0.0.1:6379/15")
RUN_ID = uuid.uuid4().hex[:8]
TEST_DATABASE = f"compresso_test_{RUN_ID}"
DATA_DIR = Path(tempfile.mkdtemp(prefix="compresso-test-"))


def postgres_url(database: str, driver: str = "postgresql+psycopg") -> str:
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", f"{driver}://", 1)
    return f"{base}/{database}"


os.environ["COMPRESSO_DATABASE_URL"] = postgres_url(TEST_DATABASE)
os.environ["COMPRESSO_BROKER_URL"] = REDIS_URL
os.environ["COMPRESSO_DATA_DIR"] = str(DATA_DIR)
os.environ["COMPRESSO_GPU_ENABLED"] = "false"
os.environ.pop("COMPRESSO_STORAGE_DIR", None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def create_database(name: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database() -> str:
    """The run's Postgres database, migrated to head, and an empty Redis broker database."""
    import redis

    from app.cli import migrate

    create_database(TEST_DATABASE)
    redis.Redis.from_url(REDIS_URL).flushdb()
    migrate()
    yield os.environ["COMPRESSO_DATABASE_URL"]
    from app.db.session import get_engine

    get_engine().dispose()
    drop_database(TEST_DATABASE)
