"""The memory this process may use: its cgroup v2 limit where one is set, else the machine's. The worker
reports it with its hardware, and a goal's pre-flight checks the job's estimated peak against it. And the
memory the job's process used at its peak, for the report."""

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


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MiB: the kernel's high-water mark of its memory (VmHWM), which
    no sampling can miss. Not getrusage's ru_maxrss, which keeps the mark of the process this one was forked
    from (a worker's). None where the kernel has no /proc."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # in kB
    return None
