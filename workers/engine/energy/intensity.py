"""Grid carbon intensity (g CO2e per kWh) per country, from the table bundled with CodeCarbon, so the
figure is offline, versioned with the installed package, and the same one CodeCarbon itself would use.
"""

import difflib
import json
from functools import lru_cache
from importlib import resources
from importlib.metadata import version

from workers.engine.errors import EngineUserError

_MIX_FILE = "data/private_infra/global_energy_mix.json"
_PER_SOURCE_FILE = "data/private_infra/carbon_intensity_per_source.json"


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, dict], dict[str, object], str]:
    root = resources.files("codecarbon")
    mix = json.loads((root / _MIX_FILE).read_text(encoding="utf-8"))
    per_source = json.loads((root / _PER_SOURCE_FILE).read_text(encoding="utf-8"))
    return mix, per_source, version("codecarbon")


def known_countries() -> list[str]:
    return sorted(_tables()[0])


def _world_average(reason: str) -> tuple[float, str]:
    _, per_source, cc_version = _tables()
    value = float(per_source["world_average"])
    return value, (
        f"world average ({reason}): CodeCarbon {cc_version} {_PER_SOURCE_FILE.rsplit('/', 1)[1]}, "
        f"after {per_source.get('world_average_source', 'an unnamed source')}"
    )


def carbon_intensity(country_iso3: str | None) -> tuple[float, str]:
    """(g CO2e/kWh, where the figure comes from). None gives the world average, and says so."""
    if country_iso3 is None:
        return _world_average("no country configured")
    mix, _, cc_version = _tables()
    code = country_iso3.strip().upper()
    entry = mix.get(code)
    if entry is None:
        close = difflib.get_close_matches(code, mix, n=3)
        hint = f" Close codes: {', '.join(close)}." if close else ""
        raise EngineUserError(
            f"Unknown country code {country_iso3!r} for the carbon intensity.{hint} Use an ISO 3166-1 alpha-3 code "
            f"(e.g. FRA, DEU, USA, IND); the {len(mix)} codes known are the keys of {_MIX_FILE} in the codecarbon "
            "package (workers.engine.energy.intensity.known_countries() lists them). Leave it empty for the "
            "world average."
        )
    if entry.get("carbon_intensity") is None:
        return _world_average(f"{code} has no carbon_intensity figure")
    return float(entry["carbon_intensity"]), (
        f"{entry.get('country_name', code)} ({code}), {entry.get('year', 'year unknown')} grid average: "
        f"CodeCarbon {cc_version} {_MIX_FILE.rsplit('/', 1)[1]}"
    )
