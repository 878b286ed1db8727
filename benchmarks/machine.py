"""What a benchmark result says about the machine it ran on."""

from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name: int8 speedups differ between CPUs far more than between runs (3.9x on
    an AMD EPYC where an earlier machine gave 1.5x), so a result names the chip it ran on."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"
