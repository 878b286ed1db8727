"""Run by the interpreter of the isolated Boavizta environment, not by compresso's own: boaviztapi pins
fastapi, uvicorn and pandas releases older than compresso's, so it lives in a venv of its own
(`make install` builds .venv-boavizta) and this script is its only caller. It imports nothing from
compresso.

Reads one JSON object on stdin:
    {"lifetime_hours": float | null, "cpu": {"name": str | null} | null, "ram_gb": float | null,
     "gpus": [{"name": str, "units": int}]}
and prints one JSON object: the manufacturing (embedded) impact Boavizta allocates to one hour of
each component's life, unrounded, per criterion (gwp kgCO2eq, adp kgSbeq, pe MJ), with the
attributes Boavizta completed and where each came from.
"""

import json
import sys
import warnings
from importlib.metadata import version

CRITERIA = ("gwp", "adp", "pe")


def _assumptions(verbose: dict) -> dict[str, str]:
    """What Boavizta filled in for this component ("COMPLETED", "ARCHETYPE", "DEFAULT") and from where."""
    described = {}
    for key, value in verbose.items():
        if not isinstance(value, dict) or value.get("status") in (None, "INPUT") or key in ("duration", "impacts"):
            continue
        text = f"{value.get('value')}{' ' + value['unit'] if value.get('unit') else ''} ({value['status'].lower()}"
        described[key] = text + (f": {value['source']})" if value.get("source") else ")")
    return described


def _component(kind: str, dto, mapper, archetype_name: str, lifetime_hours: float, description: str) -> dict:  # noqa: ANN001
    from boaviztapi.compute.impacts_computation import compute_single_impact
    from boaviztapi.compute.verbose import verbose_component
    from boaviztapi.data.archetype import get_component_archetype

    component = mapper(dto, get_component_archetype(archetype_name, kind))
    component.usage.hours_life_time.set_input(lifetime_hours)
    per_hour, notes = {}, set()
    for criterion in CRITERIA:
        # duration=1: Boavizta's own allocation, impact x 1 h / hours_life_time.
        impact = compute_single_impact(component, "embedded", criterion, 1)
        if impact is None:
            continue
        per_hour[criterion] = {"value": impact.value, "min": impact.min, "max": impact.max}
        notes.update(impact.warnings)
    verbose = verbose_component(component, selected_criteria=list(CRITERIA), duration=1)
    threads = (verbose.get("threads") or {}).get("value")
    return {
        "component": kind,
        "description": description,
        "per_hour": per_hour,
        "assumptions": _assumptions(verbose),
        "warnings": sorted(notes),
        # A CPU's logical processors, so that a worker that sees only some of them is charged its share.
        "threads": int(threads) if isinstance(threads, (int, float)) else None,
    }


def probe(request: dict) -> dict:
    from boaviztapi import config
    from boaviztapi.data.archetype import get_server_archetype
    from boaviztapi.dto.component import CPU, GPU, RAM
    from boaviztapi.dto.component.cpu import mapper_cpu
    from boaviztapi.dto.component.gpu import mapper_gpu
    from boaviztapi.dto.component.ram import mapper_ram

    lifetime = request.get("lifetime_hours")
    if lifetime is None:
        default_server = get_server_archetype(config.default_server)
        lifetime = float(default_server["USAGE"]["hours_life_time"]["default"])
        lifetime_source = f"Boavizta's default server archetype ({config.default_server}): USAGE.hours_life_time"
    else:
        lifetime_source = "COMPRESSO_HARDWARE_LIFETIME_YEARS"
    components = []
    cpu = request.get("cpu")
    if cpu is not None:
        name = cpu.get("name")
        components.append(_component(
            "cpu", CPU(name=name, units=1), mapper_cpu, config.default_cpu, lifetime,
            f"one {name} package" if name else "one CPU package of Boavizta's default archetype",
        ))
    if request.get("ram_gb"):
        capacity = max(1, round(request["ram_gb"]))  # Boavizta takes whole gigabytes
        components.append(_component(
            "ram", RAM(capacity=capacity, units=1), mapper_ram, config.default_ram, lifetime, f"{capacity} GB of RAM",
        ))
    for gpu in request.get("gpus") or []:
        components.append(_component(
            "gpu", GPU(name=gpu["name"], units=gpu["units"]), mapper_gpu, config.default_gpu, lifetime,
            f"{gpu['units']} x {gpu['name']}",
        ))
    return {
        "tool": "boaviztapi",
        "tool_version": version("boaviztapi"),
        "lifetime_hours": lifetime,
        "lifetime_source": lifetime_source,
        "components": components,
    }


def main() -> None:
    warnings.simplefilter("ignore")  # scipy's curve-fit warnings concern the use phase, which is not asked for
    json.dump(probe(json.load(sys.stdin)), sys.stdout)


if __name__ == "__main__":
    main()
