"""Copies a job's log into the database while it runs: the engine's stderr file, tailed at every
poll, and the worker's own events. The API then serves it from any host, live."""

import logging
import threading
from pathlib import Path

from app.db.session import session_scope
from app.job_logs import repository
from app.job_logs.orm import ENGINE, WORKER

logger = logging.getLogger(__name__)

# Read at most this much per poll, so a runaway log cannot stall the heartbeat.
MAX_READ_BYTES = 1 << 20


class LogShipper:
    def __init__(self, job_id: str, attempt: int, engine_log: Path):
        self.job_id = job_id
        self.attempt = attempt
        self.engine_log = engine_log
        self.offset = 0
        self.partial = b""
        self.pending: list[tuple[str, str]] = []  # (source, message) not yet written
        # The checkpoint uploader's thread logs too: lines are queued and written under this lock.
        self.lock = threading.Lock()

    def worker(self, message: str) -> None:
        """Records one of the worker's own events (claimed, requeued, failed, ...) right away."""
        with self.lock:
            self.pending.append((WORKER, message))
            self._flush()

    def ship(self, final: bool = False) -> None:
        """Sends the engine log's new complete lines; with `final`, also an unterminated last line."""
        with self.lock:
            self._ship(final)

    def _ship(self, final: bool) -> None:
        try:
            with self.engine_log.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read(MAX_READ_BYTES)
        except FileNotFoundError:
            chunk = b""
        self.offset += len(chunk)
        *complete, self.partial = (self.partial + chunk).split(b"\n")
        if final and self.partial:
            complete.append(self.partial)
            self.partial = b""
        self.pending.extend((ENGINE, line.decode("utf-8", "replace")) for line in complete if line.strip())
        self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        try:
            with session_scope() as session:
                repository.append(session, self.job_id, self.attempt, self.pending)
        except Exception:  # noqa: BLE001 - the log is informative; a database blip keeps the lines for the next poll
            logger.warning("writing the log of job %s failed; retrying at the next poll", self.job_id, exc_info=True)
            return
        self.pending = []

