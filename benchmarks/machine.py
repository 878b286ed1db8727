"""What a benchmark reads about the machine it runs on: the CPU model, and processes' memory; and
running a job as its own process while watching its peak memory."""

import subprocess
import tempfile
import threading
import time
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


def run_child(command: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """Runs a command to its end; returns (wall seconds, its peak RSS in MB).

    The peak is the child's VmHWM, read every 20 ms while it runs (the last reading counts: exec
    resets the mark, and it only grows after). Not wait4's ru_maxrss: a forked child starts with
    the parent's mark, so a trivial child of this process reported the parent's hundreds of MB.
    Its output goes to files, not pipes: nothing reads a pipe until the child ends, so a job that
    printed more than a pipe holds (a long training run's progress events) blocked forever."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True, cwd=cwd)
        readings: list[float] = []
        running = threading.Event()
        running.set()

        def sample() -> None:
            while running.is_set():
                try:
                    readings.append(memory_mb(process.pid, "VmHWM"))
                except (FileNotFoundError, LookupError):  # it has exited
                    pass
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        process.wait()
        wall = time.perf_counter() - started
        running.clear()
        sampler.join()
        if process.returncode != 0:
            stdout.seek(0)
            stderr.seek(0)
            raise RuntimeError(f"{command[:4]} failed ({process.returncode}):\n{stderr.read()[-3000:]}\n{stdout.read()[-2000:]}")
    return wall, readings[-1] if readings else float("nan")
