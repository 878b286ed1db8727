"""The worker's checkpoint store, on the real Postgres and a storage folder: a checkpoint taken inside a step
replaces the one before it (row and object), the step's own end replaces both, and an attempt resumes from
the latest, saying how far inside the step it goes on from."""

import json
import time
from pathlib import Path

from sqlalchemy import select, text

from app.checkpoints.orm import JobCheckpoint
from app.core.storage import LocalStorage
from app.db.session import session_scope
from app.job_logs import repository as job_logs
from tests.rows import add_job_row, add_model_row
from workers.engine.checkpoints.settings import MANIFEST_FILE
from workers.tasks.checkpoint_store import CheckpointUploader, find_resume_point
from workers.tasks.log_shipper import LogShipper

KEY = "a" * 64


def _checkpoint(root: Path, name: str, in_step: dict | None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "payload.bin").write_bytes(name.encode() * 1000)
    (folder / MANIFEST_FILE).write_text(json.dumps({"in_step": in_step}), encoding="utf-8")
    return folder


def _rows(job_id: str) -> list[tuple[int, str]]:
    with session_scope() as session:
        rows = session.scalars(select(JobCheckpoint).where(JobCheckpoint.job_id == job_id)).all()
        return [(row.step, row.storage_key.rsplit("/", 1)[1]) for row in rows]


def _stored(storage: LocalStorage, job_id: str) -> list[str]:
    folder = storage.local_path(f"checkpoints/{job_id}/{KEY}")
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def _wait_for(condition, timeout: float = 30) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_checkpoints_inside_a_step_replace_each_other_and_the_step_end_replaces_them(database, tmp_path):
    from app.db.session import get_engine

    with get_engine().begin() as connection:
        connection.execute(text("TRUNCATE artifacts, jobs, models, datasets CASCADE"))
    job_id = add_job_row(add_model_row(), status="running", attempts=1)
    storage = LocalStorage(tmp_path / "storage")
    log = LogShipper(job_id, 1, tmp_path / "engine.log")
    uploader = CheckpointUploader(job_id, KEY, 1, storage, log)
    inside = {"step": 2, "technique": "llm_quantize", "files": "in_step"}
    try:
        uploader.submit(1, _checkpoint(tmp_path, "after-1", None))
        progress = {"pass": 1, "passes": 1, "layers_done": 3, "layers": 33}
        uploader.submit(2, _checkpoint(tmp_path, "inside-2-a", {**inside, "progress": progress}), within_step=progress)
        _wait_for(lambda: len(_rows(job_id)) == 2)
        [first_inside] = [name for step, name in _rows(job_id) if step == 2]
        assert first_inside.startswith("step-02-within-") and _stored(storage, job_id) == sorted(["step-01.tar", first_inside])

        later = {"pass": 2, "passes": 2, "layers_done": 7, "layers": 33}
        uploader.submit(2, _checkpoint(tmp_path, "inside-2-b", {**inside, "progress": later}), within_step=later)
        _wait_for(lambda: first_inside not in [name for _, name in _rows(job_id)])
        [second_inside] = [name for step, name in _rows(job_id) if step == 2]
        assert second_inside != first_inside and _stored(storage, job_id) == sorted(["step-01.tar", second_inside])

        (tmp_path / "attempt-2").mkdir()
        point = find_resume_point(job_id, KEY, storage, tmp_path / "attempt-2", log)
        assert point.step == 2 and (point.folder / "payload.bin").read_bytes() == b"inside-2-b" * 1000
        with session_scope() as session:
            lines = [line.message for line in job_logs.lines_after(session, job_id, 0, 100)]
        assert "resuming inside step 2 (pass 2 of 2, layer 7 of 33) from the checkpoint attempt 1 saved" in lines
        assert any(line.startswith("checkpoint inside step 2 (layer 3 of 33) stored") for line in lines)

        # Two more inside the step, then its end: whichever were stored on the way, only the end is left.
        for layers_done in (9, 11):
            progress = {"pass": 2, "passes": 2, "layers_done": layers_done, "layers": 33}
            uploader.submit(2, _checkpoint(tmp_path, f"inside-2-{layers_done}", {**inside, "progress": progress}),
                            within_step=progress)
        uploader.submit(2, _checkpoint(tmp_path, "after-2", None))
    finally:
        uploader.close(store_pending=True)
    assert sorted(_rows(job_id)) == [(1, "step-01.tar"), (2, "step-02.tar")]
    assert _stored(storage, job_id) == ["step-01.tar", "step-02.tar"]
    assert not list(tmp_path.glob("inside-*")) and not list(tmp_path.glob("after-*"))
