"""The startup sweep removes only orphans that have been idle, and keeps everything alive."""

import os
import shutil
import time

from app.config import get_settings
from app.core.storage import get_storage
from app.db.session import session_scope
from app.maintenance.sweep import sweep_orphans
from tests.app.conftest import client  # noqa: F401 - the shared fixture
from tests.rows import add_job_row, add_model_row


def make(path, age_seconds: float = 0.0):  # noqa: ANN001
    path.mkdir(parents=True, exist_ok=True)
    (path / "file").write_text("x")
    past = time.time() - age_seconds
    for item in (path / "file", path):
        os.utime(item, (past, past))
    return path


def test_only_idle_orphans_are_removed(client):  # noqa: F811
    storage = get_storage(get_settings().storage_dir)
    root = get_settings().storage_dir
    model_key = "models/" + "a" * 32
    add_model_row(storage_key=model_key)
    running_id = add_job_row(add_model_row(), status="running", attempts=2)
    finished_id = add_job_row(add_model_row(), status="succeeded", attempts=1)

    kept = [
        make(root / model_key, age_seconds=3600),  # has a row
        make(root / "models" / ("b" * 32)),  # no row, but just written: maybe a commit in flight
        make(root / "jobs" / running_id / "attempt-2", age_seconds=3600),  # the attempt running now
        make(root / ".scratch" / "live-upload"),
        make(root / "checkpoints" / running_id, age_seconds=3600),  # its next attempt resumes from them
        make(root / "checkpoints" / ("e" * 32)),  # just written
    ]
    removed = [
        make(root / "models" / ("c" * 32), age_seconds=3600),
        make(root / "datasets" / ("d" * 32), age_seconds=3600),
        make(root / "jobs" / running_id / "attempt-1", age_seconds=3600),  # a worker lost it earlier
        make(root / "jobs" / finished_id / "attempt-1", age_seconds=3600),
        make(root / ".scratch" / "dead-upload", age_seconds=3600),
        make(root / "checkpoints" / finished_id, age_seconds=3600),  # the job will not run again
    ]
    with session_scope() as session:
        result = sweep_orphans(session, storage, idle_seconds=600)
    assert all(path.exists() for path in kept)
    assert not any(path.exists() for path in removed)
    assert result.scratch == ["dead-upload"] and result.count == 6


def test_a_storage_folder_removed_under_a_running_api_is_swept_and_written_again(client):  # noqa: F811
    """The API's storage object outlives its folder (an operator emptied it, or a test's setup removed it):
    the sweep finds nothing to remove instead of failing, and the next write makes the folders again."""
    storage = get_storage(get_settings().storage_dir)
    root = get_settings().storage_dir
    shutil.rmtree(root, ignore_errors=True)
    with session_scope() as session:
        assert sweep_orphans(session, storage, idle_seconds=0).count == 0
    with storage.scratch() as scratch:
        (scratch / "file").write_text("x")
        storage.put(scratch / "file", "models/" + "f" * 32)
    assert (root / "models" / ("f" * 32)).read_text() == "x"
