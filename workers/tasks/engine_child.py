"""Entry point of the engine child process: dies with its worker, then runs `python -m workers.engine`.

Linux's PR_SET_PDEATHSIG is used because no library offers "kill the child if the parent dies";
without it a SIGKILLed worker would leave an orphan engine burning CPU on a job that is redelivered.
"""

import ctypes
import os
import runpy
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    parent = int(os.environ.get("COMPRESSO_PARENT_PID", "0"))
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl ran; then nobody is waiting for this job.
    if parent and os.getppid() != parent:
        sys.exit(3)


AUTOGROUP = Path("/proc/self/autogroup")


def lower_priority() -> None:
    nice = int(os.environ.get("COMPRESSO_ENGINE_NICE", "0"))
    # Before torch starts its thread pool: Linux keeps a nice value per thread, and threads inherit
    # it from the one that creates them.
    os.nice(nice)
    # With autogroup scheduling (the default on desktop and many server kernels) the CPU is shared
    # between sessions first, and a thread's nice value only counts inside its own session. The
    # engine leads a session of its own (it is started with start_new_session), so without this
    # it would still get as much CPU as the whole API. Raising a group's nice needs no privilege;
    # only a session leader changes it, so that the group holds this engine and nothing else.
    if nice > 0 and os.getsid(0) == os.getpid() and AUTOGROUP.exists():
        try:
            AUTOGROUP.write_text(str(nice))
        except OSError:  # a read-only /proc in some containers: the per-thread nice still applies
            pass


if __name__ == "__main__":
    die_with_parent()
    lower_priority()
    sys.argv[0] = "workers.engine"
    runpy.run_module("workers.engine", run_name="__main__", alter_sys=True)
