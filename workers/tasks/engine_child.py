"""Entry point of the engine child process: dies with its worker, then runs `python -m workers.engine`.

Linux's PR_SET_PDEATHSIG is used because no library offers "kill the child if the parent dies";
without it a SIGKILLed worker would leave an orphan engine burning CPU on a job that is redelivered.
"""

import ctypes
import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    parent = int(os.environ.get("COMPRESSO_PARENT_PID", "0"))
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl ran; then nobody is waiting for this job.
    if parent and os.getppid() != parent:
        sys.exit(3)


def lower_priority() -> None:
    # Before torch starts its thread pool: Linux keeps a nice value per thread, and threads inherit
    # it from the one that creates them.
    os.nice(int(os.environ.get("COMPRESSO_ENGINE_NICE", "0")))


if __name__ == "__main__":
    die_with_parent()
    lower_priority()
    sys.argv[0] = "workers.engine"
    runpy.run_module("workers.engine", run_name="__main__", alter_sys=True)
