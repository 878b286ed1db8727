"""Energy per 1,000 inferences of the original and of the result: the same padded batch, device and
thread count for both, several runs of a fixed number of batches, each run one tracker task.
"""

import math
import statistics
import time
from typing import Literal

from workers.engine.energy.meter import EnergyMeter, Reading
from workers.engine.energy.schema import InferenceEnergyReport, InferenceSide
from workers.engine.evaluation.runners import Batch, Runner
from workers.engine.evaluation.settings import EvalSettings

STAGE = "inference_energy"
WARMUP_BATCHES = 1
Side = Literal["original", "result"]


def side_per_1000(runtime: str, device: str, readings: list[Reading], units_per_run: int) -> InferenceSide:
    """Device kWh per 1,000 units (inferences, or generated tokens) of each run, and their spread."""
    # Device energy: no PUE here, since payback applies the deployment's own.
    runs = [reading.device_kwh / units_per_run * 1000.0 for reading in readings]
    return InferenceSide(
        runtime=runtime,
        device=device,
        kwh_per_1000_mean=statistics.fmean(runs),
        kwh_per_1000_std=statistics.stdev(runs) if len(runs) > 1 else 0.0,
        kwh_per_1000_min=min(runs),
        kwh_per_1000_max=max(runs),
        runs=runs,
        run_seconds=[reading.duration_s for reading in readings],
    )


class InferenceProbe:
    """Measures one model, then the other (whenever each is loaded); `finish` books everything it ran,
    warm-up included, as the job's inference_energy stage and returns the report section."""

    def __init__(self, meter: EnergyMeter, settings: EvalSettings, batch: Batch, device: str):
        self.meter = meter
        self.batch = batch
        self.settings = settings
        self.device = device
        self.batch_size = len(next(iter(batch.values())))
        # Whole batches only, so every inference sees the same shape; the report gives the real count.
        self.batches_per_run = max(1, math.ceil(settings.energy_inferences_per_run / self.batch_size))
        self.inferences_per_run = self.batches_per_run * self.batch_size
        self.threads = 0
        self.wall_time_s = 0.0
        self._booked: list[Reading | None] = []
        # (runtime, device, readings) per side: not the runner, which would keep its model in memory to the end.
        self._sides: dict[Side, tuple[str, str, list[Reading | None]]] = {}

    def measure(self, side: Side, runner: Runner) -> None:
        started = time.perf_counter()
        with self.meter.measure(f"{STAGE}.{side}.warmup") as warmup:
            for _ in range(WARMUP_BATCHES):
                runner.run(self.batch)
            runner.synchronize()
        self._booked.append(warmup.reading)
        runs = []
        for repeat in range(self.settings.energy_repeats):
            with self.meter.measure(f"{STAGE}.{side}.{repeat + 1}") as run:
                for _ in range(self.batches_per_run):
                    runner.run(self.batch)
                runner.synchronize()
            runs.append(run.reading)
        self._booked.extend(runs)
        self._sides[side] = (runner.runtime, runner.device, runs)
        self.threads = self.threads or runner.threads
        self.wall_time_s += time.perf_counter() - started

    def kwh_per_1000(self, side: Side) -> float | None:
        """The mean device kWh per 1,000 inferences measured so far for `side`, or None without readings."""
        if side not in self._sides or self.meter.method() in ("unavailable", "disabled"):
            return None
        runtime, device, runs = self._sides[side]
        readings = [run for run in runs if run]
        if not readings:
            return None
        return side_per_1000(runtime, device, readings, self.inferences_per_run).kwh_per_1000_mean

    def finish(self) -> InferenceEnergyReport:
        self.meter.record(STAGE, self._booked)
        method = self.meter.method()
        sides: dict[Side, InferenceSide | None] = {"original": None, "result": None}
        if method not in ("unavailable", "disabled"):
            for side, (runtime, device, runs) in self._sides.items():
                # A run without a reading means tracking failed, and then the meter says unavailable.
                readings = [run for run in runs if run]
                sides[side] = side_per_1000(runtime, device, readings, self.inferences_per_run)
        return InferenceEnergyReport(
            device=self.device,
            batch_size=self.batch_size,
            sequence_length=self.settings.sequence_length,
            inferences_per_run=self.inferences_per_run,
            batches_per_run=self.batches_per_run,
            repeats=self.settings.energy_repeats,
            threads=self.threads,
            method=method,
            error=self.meter.error,
            wall_time_s=self.wall_time_s,
            original=sides["original"],
            result=sides["result"],
        )
