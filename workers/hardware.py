"""The worker's hardware (CPU model, the logical CPUs and memory it may use, its GPUs) and its
manufacturing footprint per hour, computed once per worker process, in the background from start, so
that every job's report carries the embodied impact without waiting for Boavizta.
"""

import logging
import os
import threading
from collections import Counter

from app.config import Settings
from workers import gpus
from workers.engine.memory import usable_memory_bytes
from workers.engine.footprint.hardware import (
    BoaviztaError,
    GpuSpec,
    HardwareFootprint,
    HardwareSpec,
    default_python,
    probe_hardware,
)

logger = logging.getLogger(__name__)
# Set by a gpu worker that supervises one pinned worker per GPU: they share the host's CPU and RAM.
GPU_WORKERS_ON_HOST = "COMPRESSO_GPU_WORKERS_ON_HOST"
# Set by `compresso worker` from --concurrency: the jobs that share this worker's CPU and RAM.
JOBS_AT_ONCE = "COMPRESSO_WORKER_CONCURRENCY"


def _memory_gb() -> float:
    return round(usable_memory_bytes() / 1024**3, 1)


def _gpus() -> list[GpuSpec]:
    pinned = os.environ.get(gpus.PINNED_GPU)
    if pinned is None:
        return []  # a cpu worker runs no job on the GPU, so it holds none
    return [GpuSpec(name=name, units=count) for name, count in Counter(gpus.gpu_names([pinned])).items()]


def machine_spec(cpu_model: str | None = None) -> HardwareSpec:
    """This process's hardware; `cpu_model` (COMPRESSO_CPU_MODEL) names the CPU where detection is vague."""
    sharing = int(os.environ.get(GPU_WORKERS_ON_HOST) or os.environ.get(JOBS_AT_ONCE) or 1)
    if cpu_model is None:
        from codecarbon.core.util import detect_cpu_model

        cpu_model = detect_cpu_model() or None
    return HardwareSpec(
        cpu_name=cpu_model,
        visible_threads=len(os.sched_getaffinity(0)),
        ram_gb=_memory_gb(),
        gpus=_gpus(),
        jobs_sharing_host=max(1, sharing),
    )


class _Probe:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.footprint: HardwareFootprint | None = None
        self.error: str | None = None
        self.started = False
        self.lock = threading.Lock()

    def run(self, settings: Settings) -> None:
        try:
            python = settings.boavizta_python or default_python()
            spec = machine_spec(settings.cpu_model)
            self.footprint = probe_hardware(spec, settings.hardware_lifetime_years, python)
            logger.info(
                "hardware footprint: %s",
                ", ".join(f"{c.description}: {c.per_hour.get('gwp', {}).get('value', 0) * 1000:.3g} g CO2e/h"
                          for c in self.footprint.components),
            )
        except (BoaviztaError, OSError, ValueError) as exc:
            self.error = f"the worker could not compute its hardware footprint: {exc}"
            logger.warning("%s", self.error)
        except Exception as exc:  # noqa: BLE001 - the footprint is informative: jobs run without it and say why
            self.error = f"the worker could not describe its hardware: {exc!r}"
            logger.warning("%s", self.error)
        finally:
            self.done.set()


_probe = _Probe()


def start_probe(settings: Settings) -> None:
    """Starts the Boavizta probe in a thread (once per process)."""
    with _probe.lock:
        if _probe.started:
            return
        _probe.started = True
    threading.Thread(target=_probe.run, args=(settings,), name="boavizta-probe", daemon=True).start()


def hardware_footprint(settings: Settings) -> tuple[HardwareFootprint | None, str | None]:
    """The footprint (waiting for the probe if it is still running), or why there is none."""
    start_probe(settings)
    _probe.done.wait()
    return _probe.footprint, _probe.error
