"""An in-process app with authentication required, and tenants with keys, on the real Postgres."""

from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.app.conftest import client, tiny_encoder_dir, tiny_encoder_zip  # noqa: F401 - shared fixtures


@dataclass(frozen=True)
class Caller:
    tenant_id: str
    tenant_name: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_caller(tenant_name: str, **key_options) -> Caller:
    from app.db.session import session_scope
    from app.tenants import service

    with session_scope() as session:
        key, tenant, secret = service.create_key(session, tenant_name, **key_options)
        return Caller(tenant_id=tenant.id, tenant_name=tenant.name, key=secret, key_id=key.id)


def empty_tenancy_tables() -> None:
    from app.db.session import get_engine

    with get_engine().begin() as connection:
        connection.execute(text("TRUNCATE artifacts, jobs, models, datasets CASCADE"))
        connection.execute(text("DELETE FROM api_keys"))
        connection.execute(text("DELETE FROM tenants WHERE id <> 'default'"))


@pytest.fixture
def auth_app(database, monkeypatch):
    """create_app() with COMPRESSO_AUTH_REQUIRED=true; the settings cache is reset around it."""
    import shutil

    from app.config import get_settings
    from app.main import create_app

    empty_tenancy_tables()
    shutil.rmtree(get_settings().storage_dir, ignore_errors=True)
    monkeypatch.setenv("COMPRESSO_AUTH_REQUIRED", "true")
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        yield client
    monkeypatch.delenv("COMPRESSO_AUTH_REQUIRED")
    get_settings.cache_clear()
    empty_tenancy_tables()


@pytest.fixture
def alice(auth_app) -> Caller:
    return make_caller("alice")


@pytest.fixture
def bob(auth_app) -> Caller:
    return make_caller("bob")
