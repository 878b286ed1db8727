"""Everything that touches CodeCarbon: building the offline tracker, its slow CPU detection, and what
it detected (which backend measures each component, the watts it assumes) for the report's inputs.
"""

import logging
import math
import threading
from typing import Any

from workers.engine.energy.schema import ComponentMethods
from workers.engine.energy.settings import EnergySettings

logger = logging.getLogger(__name__)

TRACKER = "codecarbon.OfflineEmissionsTracker"
# "process" charges the job for its own CPU time and memory, not for whatever else the machine runs.
TRACKING_MODE = "process"
# Used by CodeCarbon's periodic mode only; inside a task it samples power every second by itself.
MEASURE_POWER_SECS = 1.0
# CPU backends that read an energy counter; every other one multiplies an assumed power by time.
_COUNTER_CPU_MODES = {"intel_rapl", "windows_emi", "intel_power_gadget", "apple_powermetrics"}


def make_tracker(settings: EnergySettings) -> Any:
    """Builds the CodeCarbon tracker; the one place it is constructed, so tests can make it fail."""
    from codecarbon import OfflineEmissionsTracker
    from codecarbon.core.util import count_cpus

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    overrides = {}
    if settings.cpu_watts_per_core is not None:
        overrides["force_cpu_power"] = settings.cpu_watts_per_core * count_cpus()
    if settings.ram_watts is not None:
        overrides["force_ram_power"] = settings.ram_watts
    # Every output and online source is named off explicitly: a ~/.codecarbon.config must not turn
    # on an API upload, a CSV file or an Electricity Maps lookup behind the job's back.
    return OfflineEmissionsTracker(
        country_iso_code=settings.country,
        project_name="compresso",
        tracking_mode=TRACKING_MODE,
        measure_power_secs=MEASURE_POWER_SECS,
        pue=1.0,
        output_methods=[],
        output_handlers=[],
        emissions_endpoint=None,
        electricitymaps_api_token=None,
        cloud_provider=None,
        cloud_region=None,
        allow_multiple_runs=True,
        log_level="error",
        **overrides,
    )


_detection: threading.Thread | None = None
_detection_lock = threading.Lock()


def _detect_hardware() -> None:
    try:
        from codecarbon.core import cpu
        from codecarbon.core.hardware_cache import get_cached_tdp
        from codecarbon.core.util import detect_cpu_model

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        detect_cpu_model()
        get_cached_tdp(cpu)
    except Exception:  # noqa: BLE001 - the tracker repeats the detection and reports its own failure
        logger.debug("background hardware detection failed", exc_info=True)


def detect_hardware_in_background() -> None:
    """Starts CodeCarbon's CPU detection (cpuinfo runs a subprocess: ~1.3 s here) in a thread, so it
    overlaps other start-up work; CodeCarbon caches both results for the process."""
    global _detection
    with _detection_lock:
        if _detection is None:
            _detection = threading.Thread(target=_detect_hardware, name="codecarbon-detect", daemon=True)
            _detection.start()


def wait_for_detection() -> None:
    # Two concurrent first calls would run cpuinfo twice: the tracker waits for the background one.
    if _detection is not None:
        _detection.join()


def describe_hardware(tracker: Any, settings: EnergySettings) -> dict[str, Any]:
    """The EnergyInputs fields CodeCarbon decides: CPU model, watts assumed and their source, GPUs,
    and per component whether it is measured or estimated."""
    from codecarbon.core.cpu import DEFAULT_POWER_PER_CORE
    from codecarbon.core.util import count_cpus

    detected = tracker.get_detected_hardware()
    cpu_method, gpu_method, ram_method = "estimated", "none", "estimated"
    cpu_power_w = None
    # CodeCarbon keeps no public record of the backend it picked: read its hardware list.
    for device in getattr(tracker, "_hardware", []):
        kind = type(device).__name__
        if kind == "CPU":
            if getattr(device, "_mode", None) in _COUNTER_CPU_MODES:
                cpu_method = "measured"
            else:
                cpu_power_w = getattr(device, "_tdp", None)
        elif kind == "GPU":
            gpu_method = "measured"
        elif kind in ("AppleSiliconChip", "Raspberry"):
            part = getattr(device, "chip_part", "")
            cpu_method = "measured" if part == "CPU" else cpu_method
            gpu_method = "measured" if part == "GPU" else gpu_method
            ram_method = "measured" if part == "RAM" else ram_method
    threads = count_cpus()
    if cpu_method == "measured":
        cpu_source = "measured by CodeCarbon from the CPU's energy counters (RAPL or equivalent)"
    elif settings.cpu_watts_per_core is not None:
        cpu_source = f"COMPRESSO cpu_watts_per_core override: {settings.cpu_watts_per_core} W x {threads} logical cores"
    elif cpu_power_w is not None and math.isclose(cpu_power_w, DEFAULT_POWER_PER_CORE * threads):
        cpu_source = (
            f"CodeCarbon default: {DEFAULT_POWER_PER_CORE} W per thread x {threads} threads "
            "(CPU model not in its TDP table)"
        )
    else:
        cpu_source = "CodeCarbon TDP table entry for this CPU model"
    return {
        "cpu_model": detected.get("cpu_model"),
        "cpu_power_w": float(cpu_power_w) if cpu_power_w is not None else None,
        "cpu_power_source": cpu_source,
        "ram_power_source": (
            f"COMPRESSO ram_watts override: {settings.ram_watts} W"
            if settings.ram_watts is not None
            else "CodeCarbon RAM model: 5 W per DIMM it assumes for the process's memory, at least 2 DIMMs"
        ),
        "gpu_model": detected.get("gpu_model") or None,
        "gpu_count": int(detected.get("gpu_count") or 0),
        "components": ComponentMethods(cpu=cpu_method, gpu=gpu_method, ram=ram_method),
    }
