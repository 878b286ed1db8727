"""The JSON-lines event stream of the engine's processes (the job's engine, the federated coordinator and
site client): stdout carries only events for the process that supervises them; everything else goes
to stderr, the log."""

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from workers.parent_death import die_with_parent


def event_stream() -> TextIO:
    """Keeps the real stdout for events and points fd 1 (and sys.stdout) at stderr."""
    sys.stdout.flush()
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return events


def emit(stream: TextIO, event: dict[str, Any]) -> None:
    stream.write(json.dumps(event) + "\n")
    stream.flush()


def start_child(description: str) -> tuple[dict, TextIO]:
    """The start of a process the engine or a worker runs with `--spec spec.json` (the federated coordinator
    and site client): dies with its parent (workers.parent_death), keeps stdout for events, reads the spec."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--spec", type=Path, required=True)
    args = parser.parse_args()
    die_with_parent(signal.SIGKILL)
    events = event_stream()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Flower logs every message at INFO, and warns that start_server and start_client are deprecated (why
    # they are used: workers.engine.federated.coordinator); what a round did is in the events.
    logging.getLogger("flwr").setLevel(logging.ERROR)
    return json.loads(args.spec.read_text(encoding="utf-8")), events
