"""The memory this process may use: its cgroup v2 limit where one is set, else the machine's. The worker
reports it with its hardware, and a goal's pre-flight checks the job's estimated peak against it."""

from pathlib import Path

import psutil

_CGROUP_MEMORY_LIMIT = Path("/sys/fs/cgroup/memory.max")


def usable_memory_bytes() -> int:
    total = psutil.virtual_memory().total
    try:
        limit = _CGROUP_MEMORY_LIMIT.read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass  # no cgroup v2 limit: the machine's memory is the process's
    return total
