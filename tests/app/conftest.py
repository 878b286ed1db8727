"""API tests: the real app in-process over the real Postgres and Redis, emptied before each test."""

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.archives import zip_folder
from tests.factories import build_tiny_model


@pytest.fixture
def client(database):
    from app.config import get_settings
    from app.db.session import get_engine
    from app.main import create_app

    def empty() -> None:
        with get_engine().begin() as connection:
            connection.execute(text("TRUNCATE artifacts, jobs, models, datasets, worker_nodes, tenant_totals CASCADE"))
        shutil.rmtree(get_settings().storage_dir, ignore_errors=True)

    empty()
    with TestClient(create_app()) as test_client:
        yield test_client
    # Queued jobs left behind would count against the tenant's job limit in later test modules.
    empty()


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    return build_tiny_model("encoder", tmp_path_factory.mktemp("encoder") / "model")


@pytest.fixture(scope="session")
def tiny_encoder_zip(tiny_encoder_dir, tmp_path_factory) -> Path:
    return zip_folder(tiny_encoder_dir, tmp_path_factory.mktemp("archives") / "encoder.zip")


def upload(client: TestClient, path: Path, name: str = "tiny", route: str = "/v1/models"):
    with path.open("rb") as handle:
        return client.post(route, files={"file": (path.name, handle)}, data={"name": name})


def stored_files() -> list[Path]:
    """Every file in artifact storage, scratch included: what a rejected upload must not leave."""
    from app.config import get_settings

    root = get_settings().storage_dir
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
