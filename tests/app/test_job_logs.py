"""The job log: stored per line with a cap, read by cursor, and shipped from a growing engine log file."""

from app.db.session import session_scope
from app.job_logs import repository
from app.job_logs.orm import ENGINE, WORKER
from tests.rows import add_job_row, add_model_row
from workers.tasks.log_shipper import LogShipper


def messages(job_id: str) -> list[tuple[str, str]]:
    with session_scope() as session:
        return [(line.source, line.message) for line in repository.lines_after(session, job_id, 0, 10_000)]


def test_the_api_pages_through_the_log_with_the_after_cursor(client):
    job_id = add_job_row(add_model_row())
    with session_scope() as session:
        repository.append(session, job_id, 1, [(WORKER, f"line {i}") for i in range(5)])
    first = client.get(f"/v1/jobs/{job_id}/logs", params={"limit": 3}).json()
    assert [line["message"] for line in first["lines"]] == ["line 0", "line 1", "line 2"]
    rest = client.get(f"/v1/jobs/{job_id}/logs", params={"after": first["next_after"]}).json()
    assert [line["message"] for line in rest["lines"]] == ["line 3", "line 4"]
    assert {line["attempt"] for line in rest["lines"]} == {1}
    empty = client.get(f"/v1/jobs/{job_id}/logs", params={"after": rest["next_after"]}).json()
    assert empty == {"lines": [], "next_after": rest["next_after"]}


def test_an_unknown_job_or_a_bad_cursor_is_refused(client):
    assert client.get("/v1/jobs/nope/logs").status_code == 404
    job_id = add_job_row(add_model_row())
    response = client.get(f"/v1/jobs/{job_id}/logs", params={"after": -1})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "after"]


def test_a_job_keeps_at_most_the_cap_and_says_so(client, monkeypatch):
    monkeypatch.setattr(repository, "MAX_LINES_PER_JOB", 4)
    job_id = add_job_row(add_model_row())
    with session_scope() as session:
        assert repository.append(session, job_id, 1, [(ENGINE, "a"), (ENGINE, "b")]) == 2
        assert repository.append(session, job_id, 1, [(ENGINE, "c"), (ENGINE, "d"), (ENGINE, "e")]) == 2
        assert repository.append(session, job_id, 1, [(ENGINE, "f")]) == 0
        assert repository.append(session, job_id, 1, [(ENGINE, "x" * 5000)]) == 0
    assert messages(job_id) == [(ENGINE, "a"), (ENGINE, "b"), (ENGINE, "c"), (WORKER, repository.TRUNCATED)]


def test_a_long_line_is_cut(client):
    job_id = add_job_row(add_model_row())
    with session_scope() as session:
        repository.append(session, job_id, 1, [(ENGINE, "y" * 10_000)])
    [(_source, message)] = messages(job_id)
    assert message.startswith("y" * repository.MAX_LINE_CHARS) and message.endswith("(line cut)")
    assert len(message) < repository.MAX_LINE_CHARS + 20


def test_the_shipper_sends_only_complete_lines_until_the_end(client, tmp_path):
    job_id = add_job_row(add_model_row())
    engine_log = tmp_path / "engine.log"
    shipper = LogShipper(job_id, 2, engine_log)
    shipper.ship()  # the engine has not created its log yet
    shipper.worker("attempt 2 started")
    with engine_log.open("ab") as handle:
        handle.write(b"INFO loaded\nWARNING half a li")
    shipper.ship()
    assert messages(job_id) == [(WORKER, "attempt 2 started"), (ENGINE, "INFO loaded")]
    with engine_log.open("ab") as handle:
        handle.write(b"ne\n\nTraceback: \xff bad byte")
    shipper.ship()
    assert messages(job_id)[-1] == (ENGINE, "WARNING half a line")
    shipper.ship(final=True)
    assert messages(job_id)[-1] == (ENGINE, "Traceback: \ufffd bad byte")
    assert len(messages(job_id)) == 4  # the blank line is dropped
