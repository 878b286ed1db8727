"""Energy per 1,000 generated tokens of a causal LM, before and after, and the job's payback counted in
generated tokens, the unit LLM serving is billed in.

Both models run the same greedy generate (the energy batch of prompts, a fixed number of new tokens) on
the target's device, one untracked-for-the-figure warm-up then several tracked runs each. Like the
per-inference probe, it runs outside every stage (CodeCarbon tracks one task at a time) and books its
runs, warm-ups included, as the job's generation_energy stage.
"""

import time

import numpy as np
import torch

from workers.engine.devices import synchronize
from workers.engine.energy.inference import side_per_1000
from workers.engine.energy.meter import EnergyMeter, Reading
from workers.engine.energy.payback import PerThousand, compute_payback, resolve_deployment
from workers.engine.energy.schema import EnergyReport, GenerationEnergyReport, InferenceSide
from workers.engine.energy.settings import EnergySettings
from workers.engine.evaluation.generation import NEW_TOKENS, greedy_generate, make_prompts, prompt_length

STAGE = "generation_energy"


class GenerationEnergyProbe:
    def __init__(
        self, meter: EnergyMeter, ids: np.ndarray, batch_size: int, repeats: int, device: str,
        max_positions: int | None,
    ):
        self.meter, self.repeats, self.device = meter, repeats, device
        self.prompt_tokens = prompt_length(max_positions)
        self.prompts = make_prompts(ids, batch_size, self.prompt_tokens)
        self.tokens_per_run = batch_size * NEW_TOKENS
        self._booked: list[Reading | None] = []
        self._sides: dict[str, tuple[str, list[Reading | None]]] = {}
        self.wall_time_s = 0.0

    def measure(self, side: str, model: torch.nn.Module, runtime: str) -> None:
        started = time.perf_counter()
        generate = greedy_generate(model.eval(), self.prompts.to(self.device))
        with self.meter.measure(f"{STAGE}.{side}.warmup") as warmup:
            generate()
            synchronize(self.device)
        self._booked.append(warmup.reading)
        runs = []
        for repeat in range(self.repeats):
            with self.meter.measure(f"{STAGE}.{side}.{repeat + 1}") as run:
                generate()
                synchronize(self.device)
            runs.append(run.reading)
        self._booked.extend(runs)
        self._sides[side] = (runtime, runs)
        self.wall_time_s += time.perf_counter() - started

    def _side(self, side: str) -> InferenceSide | None:
        if side not in self._sides:
            return None
        runtime, readings = self._sides[side]
        if not readings or any(reading is None for reading in readings):
            return None
        return side_per_1000(runtime, self.device, readings, self.tokens_per_run)

    def book(self) -> None:
        """Adds the runs to the job's energy; call before the meter's report."""
        self.meter.record(STAGE, self._booked)

    def report(self, energy: EnergyReport, settings: EnergySettings) -> GenerationEnergyReport:
        original, result = self._side("original"), self._side("result")
        tracked = energy.method not in ("unavailable", "disabled")
        # Days would need requests per day in tokens, which the deployment does not state.
        deployment = resolve_deployment(settings).model_copy(update={"requests_per_day": None})
        payback = compute_payback(
            energy.total.energy_kwh if tracked else None, energy.total.co2e_g if tracked else None,
            PerThousand.of(original) if original else None, PerThousand.of(result) if result else None,
            deployment, unit="generated tokens",
        )
        return GenerationEnergyReport(
            device=self.device, batch_size=len(self.prompts), prompt_tokens=self.prompt_tokens,
            new_tokens=NEW_TOKENS, tokens_per_run=self.tokens_per_run, repeats=self.repeats,
            wall_time_s=self.wall_time_s, original=original, result=result, payback=payback,
        )
