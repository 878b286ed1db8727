"""Cursor pagination on the real Postgres: every row once, newest first, stable under inserts, filterable."""

from datetime import timedelta

from app.db.base import utcnow
from tests.app.conftest import client  # noqa: F401 - the shared fixture
from tests.rows import add_job_row, add_model_row


def all_pages(client, path: str, **params) -> tuple[list[str], int]:  # noqa: F811
    ids, pages, cursor = [], 0, None
    while True:
        response = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        ids += [item["id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return ids, pages


def test_pages_cover_every_row_once_newest_first(client):  # noqa: F811
    model_id = add_model_row()
    base = utcnow() - timedelta(hours=1)
    # Two jobs share a creation time: the id breaks the tie, so neither is skipped or repeated.
    created = [base + timedelta(seconds=i // 2) for i in range(7)]
    job_ids = [add_job_row(model_id, created_at=at) for at in created]
    newest_first = [job_id for _, job_id in sorted(zip(created, job_ids, strict=True), reverse=True)]

    ids, pages = all_pages(client, "/v1/jobs", limit=3)
    assert ids == newest_first and pages == 3
    # A row added mid-way (newer than everything) does not shift the pages already being read.
    first = client.get("/v1/jobs", params={"limit": 3}).json()
    add_job_row(model_id)
    second = client.get("/v1/jobs", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [job["id"] for job in first["items"] + second["items"]] == newest_first[:6]


def test_filters_by_status_and_creation_time(client):  # noqa: F811
    model_id = add_model_row()
    old = add_job_row(model_id, created_at=utcnow() - timedelta(days=2), status="failed")
    recent_failed = add_job_row(model_id, created_at=utcnow() - timedelta(hours=1), status="failed")
    recent_queued = add_job_row(model_id, created_at=utcnow() - timedelta(minutes=1))
    since = (utcnow() - timedelta(days=1)).isoformat()
    assert all_pages(client, "/v1/jobs", created_since=since)[0] == [recent_queued, recent_failed]
    assert all_pages(client, "/v1/jobs", status="failed")[0] == [recent_failed, old]
    assert all_pages(client, "/v1/jobs", status="failed", created_since=since)[0] == [recent_failed]


def test_models_and_datasets_lists_are_pages_too(client):  # noqa: F811
    model_ids = [add_model_row(name=f"m{i}") for i in range(3)]
    ids, pages = all_pages(client, "/v1/models", limit=2)
    assert sorted(ids) == sorted(model_ids) and pages == 2
    assert client.get("/v1/datasets").json() == {"items": [], "next_cursor": None}


def test_a_bad_cursor_or_limit_is_a_422_naming_the_parameter(client):  # noqa: F811
    for params, field in (({"cursor": "not-a-cursor"}, "cursor"), ({"limit": 0}, "limit"), ({"limit": 201}, "limit")):
        response = client.get("/v1/jobs", params=params)
        assert response.status_code == 422, params
        assert response.json()["errors"][0]["loc"] == ["query", field]
