"""Every query on the worker nodes table."""

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.worker_nodes.orm import WorkerNode


def beat(session: Session, name: str, queues: str, gpu: str | None, now: datetime) -> None:
    """Records that `name` is alive (a node seen for the first time, or after a restart, is added)."""
    node = session.get(WorkerNode, name)
    if node is None:
        session.add(WorkerNode(name=name, queues=queues, gpu=gpu, started_at=now, last_seen_at=now))
    else:
        node.queues, node.gpu, node.last_seen_at = queues, gpu, now
    session.flush()


def remove(session: Session, name: str) -> None:
    session.execute(delete(WorkerNode).where(WorkerNode.name == name))


def alive(session: Session, seen_after: datetime) -> list[WorkerNode]:
    return list(session.scalars(select(WorkerNode).where(WorkerNode.last_seen_at >= seen_after).order_by(WorkerNode.name)))


def serves_queue(session: Session, queue: str, seen_after: datetime) -> bool:
    return any(queue in node.queues.split(",") for node in alive(session, seen_after))
