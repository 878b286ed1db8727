"""The JSON-lines event stream of the engine's processes (the job's engine, the federated coordinator and
site client): stdout carries only events for the process that supervises them; everything else goes
to stderr, the log."""

import json
import os
import sys
from typing import Any, TextIO


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
