"""The GPUs a gpu worker serves: one worker process per GPU, each pinned with CUDA_VISIBLE_DEVICES so
that a job owns its GPU, and the GPU's idle power, read through NVML at worker start so that every
job's report can say how much of its GPU energy was the GPU merely being held.

NVML (nvidia-ml-py, which CodeCarbon already brings) is read directly: importing torch in the worker
just to count devices would keep it resident in a process that never runs a model.
"""

import logging
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

# CUDA numbers devices fastest first unless told otherwise; NVML numbers them by PCI bus. Workers
# set this, so that index i means the same GPU to both.
DEVICE_ORDER = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
# Set in the worker processes a multi-GPU worker starts, one per GPU: the device it is pinned to.
PINNED_GPU = "COMPRESSO_WORKER_GPU"
IDLE_SAMPLE_SECONDS = 3.0
IDLE_SAMPLE_INTERVAL = 0.1


@contextmanager
def _nvml() -> Iterator[object | None]:
    """pynvml, initialised; None where there is no driver or no GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no library, no driver or no device all mean "no GPU here"
        yield None
        return
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()


def gpu_count() -> int:
    with _nvml() as nvml:
        return 0 if nvml is None else int(nvml.nvmlDeviceGetCount())


def worker_plan(count: int, visible: str | None) -> list[str]:
    """One CUDA_VISIBLE_DEVICES value per worker process: each GPU the operator made visible (indices
    or UUIDs, as CUDA reads them), or every GPU NVML counts."""
    if visible is not None and visible.strip():
        return [entry.strip() for entry in visible.split(",") if entry.strip()]
    return [str(index) for index in range(count)]


def _handle(nvml, device: str):  # noqa: ANN001, ANN202
    if device.isdigit():
        return nvml.nvmlDeviceGetHandleByIndex(int(device))
    return nvml.nvmlDeviceGetHandleByUUID(device)


def idle_watts(device: str, seconds: float = IDLE_SAMPLE_SECONDS) -> tuple[float, str] | None:
    """The median power NVML reports for `device` over `seconds` while this worker runs nothing on it,
    and how it was read; None when it cannot be read (no NVML, or a GPU without power readings)."""
    with _nvml() as nvml:
        if nvml is None:
            return None
        try:
            handle = _handle(nvml, device)
            name = nvml.nvmlDeviceGetName(handle)
            readings = []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                readings.append(nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)  # milliwatts
                time.sleep(IDLE_SAMPLE_INTERVAL)
        except Exception as exc:  # noqa: BLE001 - a GPU that reports no power: no split, and say so
            logger.warning("could not read the idle power of GPU %s through NVML: %s", device, exc)
            return None
    watts = statistics.median(readings)
    source = f"NVML power of {name} (GPU {device}), median of {len(readings)} readings over {seconds:.0f} s at worker start"
    return watts, source


def gpu_names(devices: list[str]) -> list[str]:
    """NVML's name of each device (index or UUID); empty where NVML cannot be read."""
    with _nvml() as nvml:
        if nvml is None:
            return []
        try:
            return [str(nvml.nvmlDeviceGetName(_handle(nvml, device))) for device in devices]
        except Exception as exc:  # noqa: BLE001 - names only feed the embodied estimate, which then says so
            logger.warning("could not read GPU names through NVML: %s", exc)
            return []
