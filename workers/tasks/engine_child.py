"""Entry point of the engine child process: dies with its worker (workers.parent_death), then runs
`python -m workers.engine`.
"""

import os
import runpy
import signal
import sys
from pathlib import Path

from workers.parent_death import die_with_parent


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
    die_with_parent(signal.SIGKILL)
    lower_priority()
    sys.argv[0] = "workers.engine"
    runpy.run_module("workers.engine", run_name="__main__", alter_sys=True)
