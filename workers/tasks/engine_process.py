"""Runs the compression engine in a child process and supervises it.

A child process can be killed at any moment, which is what makes cancellation take seconds
rather than waiting for the current step, and keeps a crash or out-of-memory kill of the engine
from taking the worker down with it.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workers.tasks.time_limits import Deadlines
from workers.parent_death import PARENT_PID

STDERR_TAIL_CHARS = 4000


# The engine exits with this code when it ran out of memory (see workers/engine/__main__.py).
EXIT_OUT_OF_MEMORY = 3


@dataclass
class EngineOutcome:
    kind: str  # "done", "error", "crashed", "stopped", "timed_out"
    message: str = ""
    report_path: Path | None = None
    model_zip: Path | None = None
    # A crash that another attempt may not repeat: killed by a signal (the kernel's OOM killer sends
    # SIGKILL), or out of memory. An error the engine reported, or a traceback, would happen again.
    retryable: bool = False


def _read_lines(stream, lines: "queue.Queue[str | None]") -> None:  # noqa: ANN001
    for line in stream:
        lines.put(line)
    lines.put(None)


def _stderr_tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - STDERR_TAIL_CHARS))
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def run_engine(
    spec_path: Path,
    log_path: Path,
    on_progress: Callable[[str, float], None],
    should_stop: Callable[[], str | None],
    poll_seconds: float,
    on_poll: Callable[[], None] = lambda: None,
    deadlines: Deadlines | None = None,
    nice: int = 0,
    on_event: Callable[[dict], None] = lambda event: None,
) -> EngineOutcome:
    """Runs `python -m workers.engine run --spec spec_path` until it ends, `should_stop` names a reason,
    or a time limit of `deadlines` passes.

    `on_poll` runs every `poll_seconds` too (e.g. to ship the new lines of `log_path`). The child
    runs at CPU niceness `nice`. `on_event` gets the engine's other events (a federated step's address).
    """
    command = [sys.executable, "-m", "workers.tasks.engine_child", "run", "--spec", str(spec_path)]
    env = {
        **os.environ, PARENT_PID: str(os.getpid()), "PYTHONUNBUFFERED": "1",
        "COMPRESSO_ENGINE_NICE": str(nice),
    }
    with log_path.open("wb") as stderr:
        # A new session: Ctrl-C in the terminal reaches the worker, which decides the child's fate.
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, start_new_session=True
        )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    final: dict | None = None
    next_check = 0.0
    while True:
        try:
            line = lines.get(timeout=poll_seconds)
        except queue.Empty:
            line = ""
        if line is None:
            break
        if line.strip():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {}
            if event.get("event") == "progress":
                stage = str(event.get("stage", ""))
                if deadlines is not None:
                    deadlines.on_stage(stage)
                on_progress(stage, float(event.get("fraction", 0.0)))
            elif event.get("event") in ("done", "error"):
                final = event
            elif event.get("event") is not None:
                on_event(event)
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + poll_seconds
            on_poll()
            reason = should_stop()
            if reason is not None:
                _kill(process)
                return EngineOutcome("stopped", reason)
            if deadlines is not None:
                now = time.monotonic()
                if deadlines.soft_limit_passed(now) is not None:
                    _signal(process, signal.SIGTERM)  # the engine unwinds; the loop sees it exit
                hard = deadlines.hard_limit_passed(now)
                if hard is not None:
                    _kill(process)
                    return EngineOutcome("timed_out", hard)
    returncode = process.wait()
    if final is not None and final["event"] == "done" and returncode == 0:
        # Finished before the stop request took effect: the results are whole, keep them.
        return EngineOutcome("done", report_path=Path(final["report_path"]), model_zip=Path(final["model_zip"]))
    if deadlines is not None and deadlines.soft_reason is not None:
        return EngineOutcome("timed_out", deadlines.soft_reason)
    if returncode == EXIT_OUT_OF_MEMORY:
        return EngineOutcome("crashed", "The engine ran out of memory.", retryable=True)
    if final is not None and final["event"] == "error":
        return EngineOutcome("error", str(final.get("message", "the engine reported an error")))
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (the system may have run out of memory)" if returncode == -signal.SIGKILL else ""
        return EngineOutcome("crashed", f"The engine was killed by {name}{hint}.", retryable=True)
    return EngineOutcome("crashed", f"The engine failed (exit code {returncode}): {_stderr_tail(log_path)}")


def _signal(process: subprocess.Popen, sig: int) -> None:
    """Signals the engine and everything it started (its own process group)."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def _kill(process: subprocess.Popen) -> None:
    _signal(process, signal.SIGKILL)
    process.wait()
