"""What a benchmark reads about the machine it runs on: the CPU model, and processes' memory."""

from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name: int8 speedups differ between CPUs far more than between runs (3.9x on
    an AMD EPYC where an earlier machine gave 1.5x), so a result names the chip it ran on."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def memory_mb(pid: int, field: str) -> float:
    """A memory line of /proc/PID/status in MB: "VmRSS" (resident now) or "VmHWM" (its high-water
    mark). FileNotFoundError once the process is reaped; LookupError for a zombie, which lists none."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"{field} not found for process {pid}")
