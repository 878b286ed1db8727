"""Embodied impact, after Luccioni et al. (2022) and Boavizta's methodology: the manufacture of the
worker's CPU, RAM and GPUs, allocated linearly over their lifetime (Boavizta's own allocation), is
charged to the job for every hour it held them, at the share of each component the job held. For
inference, the components the target runs on are charged for the measured time of 1,000 inferences.
"""

import math
import statistics

from workers.engine.energy.payback import PerThousand, noise_band
from workers.engine.energy.schema import EnergyReport, InferenceEnergyReport, InferenceSide
from workers.engine.footprint.hardware import HardwareFootprint, amount, component_share
from workers.engine.footprint.payback import unit_payback
from workers.engine.footprint.schema import (
    EmbodiedAmount,
    EmbodiedComponent,
    EmbodiedInference,
    EmbodiedInputs,
    EmbodiedPerThousand,
    EmbodiedReport,
    EmbodiedTotal,
    StageEmbodied,
)
from workers.engine.footprint.settings import FootprintSettings

UNIT = "g CO2e embodied"
ALLOCATION = (
    "Boavizta: each component's manufacture impact x 1 h / its lifetime in hours, times the share of it one job "
    "holds, times the hours the job held it (each stage's duration)"
)
LEFT_OUT = (
    "The rest of the server (case, power supply, motherboard, storage, assembly) and end of life: a worker often "
    "holds only part of a shared host, and no share of those parts can be measured from inside it; Boavizta has no "
    "end-of-life figures for components."
)
_TARGET_COMPONENTS = {"cpu": ("cpu", "ram"), "cuda": ("cpu", "ram", "gpu")}


def _optional_sum(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return math.fsum(present) if present else None


def _sum(amounts: list[EmbodiedAmount]) -> EmbodiedAmount:
    return EmbodiedAmount(
        gwp_g=math.fsum(item.gwp_g for item in amounts),
        adp_kgsbeq=_optional_sum([item.adp_kgsbeq for item in amounts]),
        pe_mj=_optional_sum([item.pe_mj for item in amounts]),
    )


def _scaled(per_hour: EmbodiedAmount, hours: float) -> dict[str, float | None]:
    return {
        "gwp_g": per_hour.gwp_g * hours,
        "adp_kgsbeq": None if per_hour.adp_kgsbeq is None else per_hour.adp_kgsbeq * hours,
        "pe_mj": None if per_hour.pe_mj is None else per_hour.pe_mj * hours,
    }


def _seconds_per_thousand(side: InferenceSide, inferences_per_run: int) -> PerThousand:
    runs = [seconds / inferences_per_run * 1000.0 for seconds in side.run_seconds]
    return PerThousand(statistics.fmean(runs), statistics.stdev(runs) if len(runs) > 1 else 0.0, len(runs))


def _components(hardware: HardwareFootprint) -> tuple[list[EmbodiedComponent], dict[str, list[EmbodiedAmount]]]:
    """Each component as reported, and per component the amounts per hour of the share a job holds."""
    components, held = [], {}
    for probed in hardware.components:
        share, reason = component_share(probed, hardware.spec)
        gwp = probed.per_hour.get("gwp") or {}
        components.append(EmbodiedComponent(
            component=probed.component, description=probed.description, share=share, share_reason=reason,
            per_hour_whole=amount(probed.per_hour, 1.0),
            gwp_g_per_hour_min=gwp["min"] * 1000.0 if "min" in gwp else None,
            gwp_g_per_hour_max=gwp["max"] * 1000.0 if "max" in gwp else None,
            assumptions=probed.assumptions, warnings=probed.warnings,
        ))
        held.setdefault(probed.component, []).append(amount(probed.per_hour, share))
    return components, held


def embodied_for(hardware: HardwareFootprint, seconds: float) -> dict[str, float | None]:
    """gwp_g, adp_kgsbeq and pe_mj of holding the worker's share of `hardware` for `seconds`."""
    _, held = _components(hardware)
    return _scaled(_sum([item for items in held.values() for item in items]), seconds / 3600.0)


def _site_charged(stage) -> bool:  # noqa: ANN001 - a StageEnergy
    return stage.site_impact is not None and stage.site_impact.gwp_g is not None


def unavailable(reason: str, method: str = "unavailable") -> EmbodiedReport:
    return EmbodiedReport(
        method=method, error=reason, inputs=None, stages=[], total=None, inference=None,
        payback=unit_payback(UNIT, None, None, False, reason, None),
    )


def embodied_section(
    energy: EnergyReport,
    inference: InferenceEnergyReport,
    target_device: str,
    wall_time_s: float,
    requests_per_day: float | None,
    settings: FootprintSettings,
) -> EmbodiedReport:
    hardware = settings.hardware
    if hardware is None:
        return unavailable(settings.hardware_error or "no hardware footprint was given (a worker computes it at start)")
    components, held = _components(hardware)
    per_hour = _sum([item for items in held.values() for item in items])
    # Energy stages time the whole job; without them (tracking off or failed) the job is one stage.
    timed = [(stage.stage, stage.duration_s) for stage in energy.stages if stage.site is None] or [("job", wall_time_s)]
    stages = [StageEmbodied(stage=name, duration_s=seconds, **_scaled(per_hour, seconds / 3600.0)) for name, seconds in timed]
    # A federated site's stage ran on the site's hardware: its own worker charged it (site_impact); a site that
    # sent no figure is left out (site_stages_left_out).
    stages += [
        StageEmbodied(stage=stage.stage, duration_s=stage.duration_s, gwp_g=stage.site_impact.gwp_g,
                      adp_kgsbeq=stage.site_impact.adp_kgsbeq, pe_mj=stage.site_impact.pe_mj)
        for stage in energy.stages if stage.site is not None and _site_charged(stage)
    ]
    total = EmbodiedTotal(
        duration_s=math.fsum(stage.duration_s for stage in stages),
        **_sum([EmbodiedAmount(gwp_g=s.gwp_g, adp_kgsbeq=s.adp_kgsbeq, pe_mj=s.pe_mj) for s in stages]).model_dump(),
    )
    used = [name for name in _TARGET_COMPONENTS[target_device] if name in held]
    target_per_hour = _sum([item for name in used for item in held[name]])
    sides: dict[str, tuple[PerThousand, EmbodiedPerThousand] | None] = {}
    for name, side in (("original", inference.original), ("result", inference.result)):
        if side is None or not side.run_seconds:
            sides[name] = None
            continue
        seconds = _seconds_per_thousand(side, inference.inferences_per_run)
        sides[name] = seconds, EmbodiedPerThousand(
            seconds=seconds.mean, seconds_std=seconds.std, **_scaled(target_per_hour, seconds.mean / 3600.0)
        )
    before, after = sides["original"], sides["result"]
    if before and after:
        band = noise_band(before[0], after[0])
        difference = before[0].mean - after[0].mean
        measurable = abs(difference) > band
        why = (
            f"the time of 1,000 inferences differs by {difference:.3g} s, within its noise band of ±{band:.3g} s."
            if math.isfinite(band) else "one run per model gives no noise estimate."
        )
        saving = before[1].gwp_g - after[1].gwp_g
    else:
        measurable, why, saving = False, "the inference runs were not timed (energy tracking off or failed).", None
    return EmbodiedReport(
        method="estimated",
        error=None,
        inputs=EmbodiedInputs(
            tool=hardware.tool, tool_version=hardware.tool_version, lifetime_hours=hardware.lifetime_hours,
            lifetime_source=hardware.lifetime_source, allocation=ALLOCATION, components=components,
            left_out=LEFT_OUT, per_hour=per_hour,
        ),
        stages=stages,
        total=total,
        site_stages_left_out=[stage.stage for stage in energy.stages if stage.site is not None and not _site_charged(stage)],
        inference=EmbodiedInference(
            components=used, original=before[1] if before else None, result=after[1] if after else None
        ),
        payback=unit_payback(UNIT, total.gwp_g, saving, measurable, why, requests_per_day),
    )
