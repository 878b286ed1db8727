"""Every worker node says it is alive: a row in worker_nodes, refreshed every
COMPRESSO_WORKER_HEARTBEAT_SECONDS and removed at a clean shutdown (a killed node's row just goes
stale). The API reads it to send `"device": "auto"` jobs to a GPU worker when one is running.
"""

import logging
import os
import threading

from celery import signals

from app.config import get_settings
from app.db.base import utcnow
from app.db.session import session_scope
from app.worker_nodes import repository

logger = logging.getLogger(__name__)

# Set by `compresso worker` before Celery starts: what this node consumes and the GPU it is pinned to.
QUEUES_VARIABLE = "COMPRESSO_WORKER_QUEUES"
GPU_VARIABLE = "COMPRESSO_WORKER_GPU"

_stop = threading.Event()
_node: dict[str, str] = {}


def beat_once(name: str) -> None:
    with session_scope() as session:
        repository.beat(session, name, os.environ.get(QUEUES_VARIABLE, ""), os.environ.get(GPU_VARIABLE), utcnow())


def _loop(name: str) -> None:
    interval = get_settings().worker_heartbeat_seconds
    while True:
        try:
            beat_once(name)
        except Exception:  # noqa: BLE001 - a database outage must not stop the node; the next beat retries
            logger.warning("the worker heartbeat could not be written; retrying in %ss", interval, exc_info=True)
        if _stop.wait(interval):
            return


@signals.worker_ready.connect
def _start(sender=None, **_kwargs) -> None:  # noqa: ANN001
    _node["name"] = sender.hostname
    threading.Thread(target=_loop, args=(sender.hostname,), name="compresso-node-heartbeat", daemon=True).start()


@signals.worker_shutting_down.connect
def _halt(**_kwargs) -> None:
    _stop.set()
    if "name" in _node:
        try:
            with session_scope() as session:
                repository.remove(session, _node["name"])
        except Exception:  # noqa: BLE001 - the row goes stale on its own
            logger.warning("could not remove this worker's heartbeat row", exc_info=True)
