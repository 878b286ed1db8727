"""Every query on the job log table. A job keeps at most MAX_LINES_PER_JOB lines, so a chatty or
looping engine cannot fill the database."""

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.job_logs.orm import WORKER, JobLogLine

MAX_LINES_PER_JOB = 5000
MAX_LINE_CHARS = 2000
TRUNCATED = f"(log truncated: a job keeps at most {MAX_LINES_PER_JOB} lines)"


def count(session: Session, job_id: str) -> int:
    return session.scalar(select(func.count()).select_from(JobLogLine).where(JobLogLine.job_id == job_id)) or 0


def append(session: Session, job_id: str, attempt: int, lines: list[tuple[str, str]]) -> int:
    """Adds (source, message) lines, in order, while they fit under the cap; returns how many were added."""
    if not lines:
        return 0
    # The last slot is kept for the line that says the rest was dropped.
    room = MAX_LINES_PER_JOB - 1 - count(session, job_id)
    if room < 0:
        return 0
    kept = [(source, _clip(message)) for source, message in lines[:room]]
    if len(lines) > room:
        kept.append((WORKER, TRUNCATED))
    session.add_all(
        JobLogLine(job_id=job_id, attempt=attempt, source=source, message=message) for source, message in kept
    )
    session.flush()
    return len(kept)


def _clip(message: str) -> str:
    message = message.rstrip("\r\n")
    return message if len(message) <= MAX_LINE_CHARS else message[:MAX_LINE_CHARS] + " …(line cut)"


def lines_after(session: Session, job_id: str, after: int, limit: int) -> list[JobLogLine]:
    query = (
        select(JobLogLine)
        .where(JobLogLine.job_id == job_id, JobLogLine.id > after)
        .order_by(JobLogLine.id)
        .limit(limit)
    )
    return list(session.scalars(query))

