"""The worker's hardware and its manufacturing footprint per hour, from Boavizta's methodology and
reference data (boaviztapi), which runs in its own interpreter: see boavizta_probe.py for why.
"""

import json
import subprocess
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from workers.engine.footprint.schema import EmbodiedAmount
from workers.engine.venvs import sibling_venv_python

PROBE = Path(__file__).with_name("boavizta_probe.py")
PROBE_TIMEOUT_S = 120.0
HOURS_PER_YEAR = 8760.0


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GpuSpec(_Frozen):
    name: str
    units: int = Field(ge=1)


class HardwareSpec(_Frozen):
    """What one worker runs its jobs on."""

    cpu_name: str | None = Field(description="As CodeCarbon detects it; Boavizta fuzzy-matches it to its CPU table.")
    visible_threads: int = Field(ge=1, description="Logical CPUs this worker may use (its affinity).")
    ram_gb: float = Field(gt=0, description="Memory this worker may use (its cgroup limit, else the machine's).")
    gpus: list[GpuSpec] = Field(default_factory=list)
    jobs_sharing_host: int = Field(
        1, ge=1, description="Jobs that run on this host's CPU and RAM at once: the worker's concurrency, or its "
        "number of pinned GPU workers."
    )


class ProbedComponent(_Frozen):
    component: str
    description: str
    per_hour: dict[str, dict[str, float]] = Field(description="criterion -> value/min/max, Boavizta's units.")
    assumptions: dict[str, str]
    warnings: list[str]
    threads: int | None = None


class HardwareFootprint(_Frozen):
    """The probe's answer for one HardwareSpec; carried to every job of the worker."""

    spec: HardwareSpec
    tool: str
    tool_version: str
    lifetime_hours: float
    lifetime_source: str
    components: list[ProbedComponent]


class BoaviztaError(RuntimeError):
    """The embodied footprint could not be computed; jobs run and say why."""


def boavizta_request(spec: HardwareSpec, lifetime_years: float | None) -> dict:
    return {
        "lifetime_hours": None if lifetime_years is None else lifetime_years * HOURS_PER_YEAR,
        "cpu": {"name": spec.cpu_name},
        "ram_gb": spec.ram_gb,
        "gpus": [gpu.model_dump() for gpu in spec.gpus],
    }


def probe_hardware(spec: HardwareSpec, lifetime_years: float | None, python: Path) -> HardwareFootprint:
    """Runs boavizta_probe.py under `python` (the isolated environment's interpreter)."""
    if not python.exists():
        raise BoaviztaError(
            f"the Boavizta interpreter {python} does not exist: run `make install` (it builds .venv-boavizta), "
            "or set COMPRESSO_BOAVIZTA_PYTHON to a Python that has boaviztapi installed"
        )
    try:
        completed = subprocess.run(
            [str(python), str(PROBE)], input=json.dumps(boavizta_request(spec, lifetime_years)),
            capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BoaviztaError(f"the Boavizta probe took longer than {PROBE_TIMEOUT_S:.0f} s") from exc
    if completed.returncode != 0:
        # The exception's own lines, not pydantic's trailing "for further information" link.
        lines = [line.strip() for line in completed.stderr.splitlines() if line.strip() and "errors.pydantic" not in line]
        raise BoaviztaError(f"the Boavizta probe failed (exit {completed.returncode}): {' '.join(lines[-3:]) or 'no output'}")
    return HardwareFootprint(spec=spec, **json.loads(completed.stdout))


def default_python() -> Path:
    """.venv-boavizta beside the running venv (the layout `make install` makes)."""
    return sibling_venv_python(".venv-boavizta")


def component_share(component: ProbedComponent, spec: HardwareSpec) -> tuple[float, str]:
    """The fraction of a component one job holds, and why."""
    if component.component == "gpu":
        return 1.0, "the worker is pinned to its GPUs and runs one job at a time on them"
    jobs = spec.jobs_sharing_host
    sharing = f" / {jobs} jobs sharing this host at once" if jobs > 1 else ""
    if component.component == "cpu" and component.threads:
        fraction = min(1.0, spec.visible_threads / component.threads)
        reason = f"{spec.visible_threads} of the package's {component.threads} logical CPUs{sharing}"
        return fraction / jobs, reason
    return 1.0 / jobs, f"all of it{sharing}" if sharing else "all of it, one job at a time"


def amount(per_hour: dict[str, dict[str, float]], share: float, hours: float = 1.0) -> EmbodiedAmount:
    """Boavizta's kg CO2e, kg Sb eq and MJ per hour -> g CO2e, kg Sb eq and MJ for `hours` at `share`."""
    def scaled(criterion: str, factor: float) -> float | None:
        entry = per_hour.get(criterion)
        return None if entry is None else entry["value"] * factor * share * hours

    return EmbodiedAmount(gwp_g=scaled("gwp", 1000.0) or 0.0, adp_kgsbeq=scaled("adp", 1.0), pe_mj=scaled("pe", 1.0))
