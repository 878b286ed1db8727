"""Child processes that die with their parent: an engine with its worker, a worker with the `serve` (or
the gpu supervisor) that started it. Linux's PR_SET_PDEATHSIG is used because no library offers "kill
the child if the parent dies"; without it a SIGKILLed parent leaves orphans that go on consuming the
broker or burning CPU on a job that is redelivered.
"""

import ctypes
import os
import sys

PR_SET_PDEATHSIG = 1
# The pid of the process that started this one, set by the parent in the child's environment.
PARENT_PID = "COMPRESSO_PARENT_PID"


def die_with_parent(signum: int) -> None:
    """Asks the kernel to send `signum` when the parent exits, and exits now (status 3) if the parent
    named in the environment is already gone, since then nobody is waiting for this process."""
    parent = int(os.environ.get(PARENT_PID, "0"))
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if parent and os.getppid() != parent:
        sys.exit(3)
