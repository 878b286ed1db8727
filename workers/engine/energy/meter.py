"""The job's own energy and CO2 per stage: one CodeCarbon OfflineEmissionsTracker per job, one tracker
task per stage. A tracker failure never fails the job: the section then says "unavailable" and why.
"""

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from workers.engine.energy import tracker as tracking
from workers.engine.energy.intensity import carbon_intensity
from workers.engine.energy.schema import (
    EnergyInputs,
    EnergyReport,
    EnergyTotal,
    Method,
    SectionMethod,
    StageEnergy,
)
from workers.engine.energy.settings import EnergySettings

logger = logging.getLogger(__name__)
T = TypeVar("T")

_POWER_MODEL = (
    "CPU: cpu_power_w x the share of all logical cores this process (and its children) kept busy, "
    "from its CPU time (CodeCarbon process mode); RAM: ram_power_w x time; GPU: NVML readings when present. "
    "Power sampled every second within a stage and once at its end."
)
_PUE_APPLIED_BY = (
    "compresso: CodeCarbon runs with pue=1.0 and each stage's cpu, gpu and ram kWh is multiplied by pue once, "
    "here; the inference section is device energy (no PUE) and payback applies the deployment's."
)


def split_gpu_energy(gpu_kwh: float, duration_s: float, idle_watts: float | None, pue: float) -> dict[str, float | None]:
    """A stage's GPU energy (PUE included) as what an idle GPU would have drawn over the same time and
    what the work added. The idle part is capped at the whole: a reading below the idle power is noise."""
    if idle_watts is None:
        return {"gpu_idle_kwh": None, "gpu_active_kwh": None}
    idle = min(gpu_kwh, idle_watts * duration_s / 3.6e6 * pue)
    return {"gpu_idle_kwh": idle, "gpu_active_kwh": gpu_kwh - idle}


@dataclass(frozen=True)
class Reading:
    """One tracker task: device energy (before PUE) in kWh, and the powers CodeCarbon averaged."""

    duration_s: float
    cpu_kwh: float
    gpu_kwh: float
    ram_kwh: float
    ram_power_w: float

    @property
    def device_kwh(self) -> float:
        return self.cpu_kwh + self.gpu_kwh + self.ram_kwh


class Measurement:
    """Filled when its `measure` block ends; `reading` stays None when nothing was tracked."""

    reading: Reading | None = None


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _combine(methods: set[str]) -> Method:
    methods = methods - {"none"}
    if methods == {"measured"}:
        return "measured"
    return "estimated" if methods <= {"estimated"} else "mixed"


class EnergyMeter:
    """Stages are `begin(name)` ... `end(name)`; `measure()` tracks a block without recording it, for
    callers that build one stage out of several tasks (`record`)."""

    def __init__(self, settings: EnergySettings):
        self.settings = settings
        # A wrong country code is the user's to fix (EngineUserError), unlike a tracker failure:
        # both are checked here, before the job does any work.
        self.intensity, self.intensity_source = carbon_intensity(settings.country)
        if settings.deployment_country is not None:
            carbon_intensity(settings.deployment_country)
        self.error: str | None = None
        self._tracker: Any = None
        self._stages: list[StageEnergy] = []
        self._open: tuple[str, str] | None = None  # (stage, task name)
        self._open_readings: list[Reading] = []  # the open stage's readings before its current task (split_open_stage)
        self._tasks = 0
        self._hardware: dict[str, Any] = {}
        self._ram_power_w = 0.0
        if settings.enabled:
            tracking.detect_hardware_in_background()
            self._tracker = self._guard("creating the tracker", lambda: tracking.make_tracker(settings))
            if self._tracker is None and self.error is None:
                self.error = "no tracker was created"

    @property
    def active(self) -> bool:
        return self._tracker is not None and self.error is None

    def _guard(self, action: str, call: Callable[[], T]) -> T | None:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - any tracker failure must leave the job running
            self._fail(f"CodeCarbon failed while {action}: {type(exc).__name__}: {exc}")
            return None

    def _fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
            logger.warning("energy tracking stopped: %s", message)
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            try:
                tracker.stop()
            except Exception:  # noqa: BLE001 - already failed; stopping is best effort
                pass

    def _start_task(self, label: str) -> str:
        tracking.wait_for_detection()
        self._tasks += 1
        task = f"{self._tasks:03d}-{label}"
        self._tracker.start_task(task)
        if not self._hardware:
            self._hardware = tracking.describe_hardware(self._tracker, self.settings)
        return task

    def _stop_task(self, task: str) -> Reading:
        data = self._tracker.stop_task(task)
        if data is None:
            raise RuntimeError(f"no data for task {task!r}; the tracker did not start it")
        reading = Reading(
            duration_s=float(data.duration),
            cpu_kwh=float(data.cpu_energy),
            gpu_kwh=float(data.gpu_energy),
            ram_kwh=float(data.ram_energy),
            ram_power_w=float(data.ram_power or 0.0),
        )
        values = (reading.duration_s, reading.cpu_kwh, reading.gpu_kwh, reading.ram_kwh)
        if not all(math.isfinite(value) and value >= 0 for value in values):
            raise ValueError(f"implausible reading for task {task!r}: {reading}")
        self._ram_power_w = max(self._ram_power_w, reading.ram_power_w)
        return reading

    def begin(self, stage: str) -> None:
        if not self.active:
            return
        if self._open is not None:
            self._fail(f"stage {stage!r} began while {self._open[0]!r} was still open")
            return
        task = self._guard(f"starting stage {stage!r}", lambda: self._start_task(stage))
        if task is not None:
            self._open = (stage, task)
            self._open_readings = []

    def end(self, stage: str) -> None:
        if not self.active or self._open is None:
            return
        open_stage, task = self._open
        self._open = None
        if open_stage != stage:
            self._fail(f"stage {stage!r} ended while {open_stage!r} was open")
            return
        reading = self._guard(f"stopping stage {stage!r}", lambda: self._stop_task(task))
        if reading is not None:
            self.record(stage, [*self._open_readings, reading])
        self._open_readings = []

    def split_open_stage(self) -> StageEnergy | None:
        """What the open stage has used so far, as a stage of its own (not booked), for a checkpoint taken inside
        a step: the next attempt books it, since this one may never end the stage. The stage goes on; its
        booked figure at the end still covers all of it. None when nothing is open or tracking failed."""
        if not self.active or self._open is None:
            return None
        stage, task = self._open
        reading = self._guard(f"reading stage {stage!r}", lambda: self._stop_task(task))
        if reading is None:
            return None
        self._open_readings.append(reading)
        next_task = self._guard(f"going on with stage {stage!r}", lambda: self._start_task(stage))
        if next_task is None:
            return None
        self._open = (stage, next_task)
        return self._stage_energy(stage, self._open_readings)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Books the energy of the block under `name` (a no-op once the meter has failed)."""
        self.begin(name)
        try:
            yield
        finally:
            self.end(name)

    @contextmanager
    def measure(self, label: str) -> Iterator[Measurement]:
        measurement = Measurement()
        task = None
        if self.active and self._open is not None:
            # CodeCarbon runs one task at a time: a block inside an open stage cannot be measured.
            self._fail(f"{label!r} was measured while stage {self._open[0]!r} was open")
        elif self.active:
            task = self._guard(f"starting {label!r}", lambda: self._start_task(label))
        try:
            yield measurement
        finally:
            if task is not None and self.active:
                measurement.reading = self._guard(f"stopping {label!r}", lambda: self._stop_task(task))

    def record(self, stage: str, readings: list[Reading | None]) -> None:
        """Adds one stage made of `readings`; a missing reading means tracking failed, so nothing is added."""
        if not self.active or not readings or any(reading is None for reading in readings):
            return
        self._stages.append(self._stage_energy(stage, readings))

    def _stage_energy(self, stage: str, readings: list[Reading]) -> StageEnergy:
        pue = self.settings.pue
        cpu = math.fsum(reading.cpu_kwh for reading in readings) * pue
        gpu = math.fsum(reading.gpu_kwh for reading in readings) * pue
        ram = math.fsum(reading.ram_kwh for reading in readings) * pue
        energy = cpu + gpu + ram
        duration = math.fsum(reading.duration_s for reading in readings)
        return StageEnergy(
            stage=stage,
            duration_s=duration,
            cpu_kwh=cpu,
            gpu_kwh=gpu,
            ram_kwh=ram,
            energy_kwh=energy,
            co2e_g=energy * self.intensity,
            method=self.method(),
            **split_gpu_energy(gpu, duration, self.settings.gpu_idle_watts, pue),
        )

    def stages(self) -> list[StageEnergy]:
        """Every stage booked so far (a checkpoint carries them to the next attempt)."""
        return list(self._stages)

    def carry(self, stages: list[StageEnergy]) -> None:
        """Books an earlier attempt's stages of the same job before this attempt's own: the job's energy is
        every attempt's. Nothing is carried once tracking has failed, as nothing of this attempt is reported."""
        if self.active:
            self._stages[:0] = stages

    def add_stage(self, stage: StageEnergy) -> None:
        """Books a stage measured elsewhere (a federated site's training), with its own figures."""
        if self.active:
            self._stages.append(stage)

    def stage_kwh(self, stage: str) -> float | None:
        """The energy booked under `stage` so far (its last entry), or None when nothing was booked."""
        for entry in reversed(self._stages):
            if entry.stage == stage:
                return entry.energy_kwh
        return None

    def total_kwh(self) -> float:
        """Everything booked so far: what a goal's energy budget is checked against."""
        return math.fsum(entry.energy_kwh for entry in self._stages)

    def method(self) -> SectionMethod:
        if not self.settings.enabled:
            return "disabled"
        if self.error is not None:
            return "unavailable"
        components = self._hardware.get("components")
        return _combine(set(components.model_dump().values())) if components else "estimated"

    def _inputs(self) -> EnergyInputs:
        return EnergyInputs(
            tracker=tracking.TRACKER,
            tracker_version=_package_version("codecarbon"),
            tracking_mode=tracking.TRACKING_MODE,
            ram_power_w=self._ram_power_w or None,
            power_model=_POWER_MODEL,
            country=self.settings.country,
            carbon_intensity_g_per_kwh=self.intensity,
            intensity_source=self.intensity_source,
            pue=self.settings.pue,
            pue_applied_by=_PUE_APPLIED_BY,
            gpu_idle_watts=self.settings.gpu_idle_watts,
            gpu_idle_source=self.settings.gpu_idle_source,
            **self._hardware,
        )

    def report(self) -> EnergyReport:
        try:
            return self._report()
        except Exception as exc:  # noqa: BLE001 - a malformed reading must not fail the job either
            self._fail(f"building the energy section failed: {type(exc).__name__}: {exc}")
            self._hardware = {}
            return self._report()

    def _report(self) -> EnergyReport:
        method = self.method()
        stages = self._stages if method not in ("unavailable", "disabled") else []
        cpu = math.fsum(stage.cpu_kwh for stage in stages)
        gpu = math.fsum(stage.gpu_kwh for stage in stages)
        ram = math.fsum(stage.ram_kwh for stage in stages)
        split = self.settings.gpu_idle_watts is not None
        idle = math.fsum(stage.gpu_idle_kwh or 0.0 for stage in stages) if split else None
        total = EnergyTotal(
            duration_s=math.fsum(stage.duration_s for stage in stages),
            cpu_kwh=cpu,
            gpu_kwh=gpu,
            ram_kwh=ram,
            energy_kwh=cpu + gpu + ram,
            co2e_g=math.fsum(stage.co2e_g for stage in stages),
            gpu_idle_kwh=idle,
            gpu_active_kwh=gpu - idle if idle is not None else None,
        )
        if method not in ("unavailable", "disabled") and stages:
            method = _combine({stage.method for stage in stages})
        return EnergyReport(method=method, error=self.error, inputs=self._inputs(), stages=stages, total=total)

    def close(self) -> None:
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            try:
                tracker.stop()
            except Exception:  # noqa: BLE001 - the figures are already taken; stopping is best effort
                logger.debug("stopping the tracker failed", exc_info=True)


@contextmanager
def open_meter(settings: EnergySettings) -> Iterator[EnergyMeter]:
    """The job's meter; closed (its tracker stopped) however the job ends."""
    meter = EnergyMeter(settings)
    try:
        yield meter
    finally:
        meter.close()
