"""COMPRESSO_METRICS_TOKEN: /metrics answers only that bearer token where it is set, and is open otherwise."""

import pytest
from fastapi.testclient import TestClient

from app.config import Settings

TOKEN = "scrape-secret-0123456789"


@pytest.fixture
def protected_app(database, monkeypatch):
    from app.config import get_settings
    from app.main import create_app

    monkeypatch.setenv("COMPRESSO_METRICS_TOKEN", TOKEN)
    get_settings.cache_clear()
    try:
        with TestClient(create_app()) as client:
            yield client
    finally:
        monkeypatch.delenv("COMPRESSO_METRICS_TOKEN")
        get_settings.cache_clear()


def test_metrics_need_the_token_where_one_is_set(protected_app):
    missing = protected_app.get("/metrics")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "COMPRESSO_METRICS_TOKEN" in missing.json()["detail"]
    for wrong in (TOKEN[:-1], TOKEN + "x", "Bearer", ""):
        response = protected_app.get("/metrics", headers={"Authorization": f"Bearer {wrong}"})
        assert response.status_code == 401, wrong
    allowed = protected_app.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 200
    assert "compresso_jobs{" in allowed.text
    # The token guards /metrics alone: the other public endpoints stay open.
    assert protected_app.get("/healthz").status_code == 200


def test_metrics_are_open_without_a_token(client):
    assert client.get("/metrics").status_code == 200


def test_a_blank_token_means_none():
    assert Settings(metrics_token="  ").metrics_token is None
    assert Settings(metrics_token=TOKEN).metrics_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(Settings(metrics_token=TOKEN))
