"""The Celery task that chooses the rows to label for one label suggestion: a thin adapter that runs
`python -m workers.engine suggest-labels` in a child process (torch stays out of the worker, and a
crash or out-of-memory kill ends the suggestion, not the worker) and stores what it returns.

Idempotent: only a queued suggestion is claimed, by a conditional update, so a redelivered message
does nothing.
"""

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from sqlalchemy import update

from app.config import get_settings
from app.core.storage import storage_for
from app.datasets.orm import (
    SUGGESTION_FAILED, SUGGESTION_QUEUED, SUGGESTION_RUNNING, SUGGESTION_SUCCEEDED, Dataset, LabelSuggestion,
)
from app.db.base import utcnow
from app.db.session import session_scope
from app.models.orm import Model
from workers.celery_app import SUGGEST_LABELS_TASK, celery_app
from workers.parent_death import PARENT_PID
from workers.tasks.engine_process import STDERR_TAIL_CHARS

logger = logging.getLogger(__name__)

# Embedding every row of a large dataset takes minutes on a CPU; past this the suggestion is given up.
TIMEOUT_SECONDS = 3600


def _claim(suggestion_id: str, worker: str) -> dict | None:
    with session_scope() as session:
        claimed = session.execute(
            update(LabelSuggestion)
            .where(LabelSuggestion.id == suggestion_id, LabelSuggestion.status == SUGGESTION_QUEUED)
            .values(status=SUGGESTION_RUNNING, started_at=utcnow(), worker=worker,
                    attempts=LabelSuggestion.attempts + 1)
        ).rowcount
        if not claimed:
            return None
        suggestion = session.get(LabelSuggestion, suggestion_id)
        return {
            "n": suggestion.n,
            "model_key": session.get(Model, suggestion.model_id).storage_key,
            "dataset_key": session.get(Dataset, suggestion.dataset_id).storage_key,
        }


def _finish(suggestion_id: str, worker: str, status: str, result: dict | None = None, error: str | None = None) -> None:
    with session_scope() as session:
        # Only this attempt's: one the reconciler handed back to the queue is another worker's now.
        session.execute(
            update(LabelSuggestion)
            .where(LabelSuggestion.id == suggestion_id, LabelSuggestion.status == SUGGESTION_RUNNING,
                   LabelSuggestion.worker == worker)
            .values(status=status, result=result, error=error, finished_at=utcnow())
        )


def _run_engine(model_dir: Path, dataset_path: Path, n: int, scratch: Path) -> tuple[dict | None, str | None]:
    """(result, None) or (None, what went wrong)."""
    spec = scratch / "spec.json"
    output = scratch / "suggestions.json"
    spec.write_text(json.dumps({
        "model_dir": str(model_dir), "dataset_path": str(dataset_path), "n": n, "device": "cpu",
        "output_path": str(output),
    }))
    command = [sys.executable, "-m", "workers.tasks.engine_child", "suggest-labels", "--spec", str(spec)]
    # The child dies with this worker process (workers.parent_death), which it checks by this pid.
    env = {**os.environ, PARENT_PID: str(os.getpid())}
    try:
        finished = subprocess.run(
            command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        return None, f"Choosing the rows took more than {TIMEOUT_SECONDS // 60} minutes; try a smaller dataset."
    events = [json.loads(line) for line in finished.stdout.splitlines() if line.startswith("{")]
    final = events[-1] if events else {}
    if finished.returncode == 0 and final.get("event") == "done":
        return json.loads(output.read_text(encoding="utf-8")), None
    if final.get("event") == "error":
        return None, str(final.get("message"))
    return None, f"The engine failed (exit code {finished.returncode}): {finished.stderr[-STDERR_TAIL_CHARS:].strip()}"


@celery_app.task(name=SUGGEST_LABELS_TASK, bind=True)
def suggest_labels(self, suggestion_id: str) -> str:
    worker = self.request.hostname or "unknown"
    claim = _claim(suggestion_id, worker)
    if claim is None:
        return "skipped"
    storage = storage_for(get_settings())
    try:
        with tempfile.TemporaryDirectory(prefix="suggest-") as scratch:
            result, error = _run_engine(
                storage.local_copy(claim["model_key"]), storage.local_copy(claim["dataset_key"]), claim["n"],
                Path(scratch),
            )
    except Exception as exc:  # noqa: BLE001 - whatever happened, the suggestion must not stay "running"
        logger.exception("label suggestion %s failed", suggestion_id)
        result, error = None, f"The worker could not run the suggestion: {exc}"
    if error is not None:
        _finish(suggestion_id, worker, SUGGESTION_FAILED, error=error)
        return SUGGESTION_FAILED
    _finish(suggestion_id, worker, SUGGESTION_SUCCEEDED, result=result)
    return SUGGESTION_SUCCEEDED
