"""The Celery task a site's worker runs for a federated step (queue site.NAME): a thin adapter that checks
the site's copy of the dataset against the hash the central service registered, fetches the job's original
model (models flow out to sites; data never flows in), and runs Flower's site client in Flower's
virtualenv until the coordinator ends the run.

It writes nothing to the central database or storage: what the step reports comes from the coordinator,
through Flower. The client's own log stays in the site's log (the worker's).
"""

import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path

from app.config import get_settings
from app.core.storage import sha256_of, storage_for
from app.sites.paths import site_dataset_path
from workers.celery_app import FEDERATED_SITE_TASK, celery_app
from workers.engine.federated.config import default_federated_python
from workers.engine.venvs import REPOSITORY_ROOT, repository_env
from workers.parent_death import PARENT_PID
from workers.engine.energy.settings import EnergySettings
from workers.engine.footprint.settings import FootprintSettings
from workers.engine.footprint.site import impact_rates
from workers.tasks.job_spec import energy_settings, footprint_settings

logger = logging.getLogger(__name__)


def site_dataset_file(site: str, dataset: dict) -> Path:
    """The site's own copy of a registered dataset; ValueError when it is missing or no longer the registered file."""
    path = site_dataset_path(get_settings().site_data_dir, site, dataset["sha256"], dataset["filename"])
    if not path.is_file():
        raise ValueError(
            f"dataset {dataset['id']} is not at this site ({path} is missing): register it here with "
            f"`compresso site add-dataset FILE --site {site}`"
        )
    if sha256_of(path) != dataset["sha256"]:
        raise ValueError(f"dataset {dataset['id']}'s file at this site changed since it was registered ({path})")
    return path


def run_site_client(spec: dict, scratch: Path, timeout_s: float) -> tuple[int, list[dict]]:
    """Runs the site client to its end; (exit code, its events)."""
    settings = get_settings()
    python = Path(settings.federated_python) if settings.federated_python else default_federated_python()
    spec_path = scratch / "site.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    env = repository_env(**{PARENT_PID: str(os.getpid())})
    command = [str(python), "-m", "workers.engine.federated.site_client", "--spec", str(spec_path)]
    try:
        finished = subprocess.run(
            command, stdout=subprocess.PIPE, text=True, timeout=timeout_s, check=False, env=env, cwd=REPOSITORY_ROOT,
        )
    except subprocess.TimeoutExpired:
        return -1, [{"event": "error", "message": f"the run did not end within {timeout_s:.0f} s"}]
    events = [json.loads(line) for line in finished.stdout.splitlines() if line.startswith("{")]
    return finished.returncode, events


def site_impact_rates() -> dict[str, float]:
    """This site's water (its WUE and grid) and embodied (its hardware) rates, from its worker's settings."""
    settings = get_settings()
    return impact_rates(EnergySettings(**energy_settings(settings, {})), FootprintSettings(**footprint_settings(settings, {})))


@celery_app.task(name=FEDERATED_SITE_TASK)
def federated_site(request: dict) -> dict:
    """`request`: job_id, site, address, token, tls, task, dataset {id, sha256, filename}, model_key,
    connect_timeout_s, run_timeout_s. Returns what the client did, for the site's own log."""
    site = request["site"]
    settings = get_settings()
    tls = bool(request.get("tls"))
    try:
        if settings.federated_require_tls and not tls:
            raise ValueError(
                f"its coordinator ({request['address']}) does not use TLS, and this site requires it "
                "(COMPRESSO_FEDERATED_REQUIRE_TLS): give the coordinator's worker COMPRESSO_FEDERATED_TLS_CERT, _KEY and _CA"
            )
        dataset_path = site_dataset_file(site, request["dataset"])
    except ValueError as exc:
        # The coordinator sees this site never connect and names it; the reason is in this site's log.
        logger.error("federated job %s: site %s cannot take part: %s", request["job_id"], site, exc)
        return {"status": "refused", "reason": str(exc)}
    storage = storage_for(settings)
    with tempfile.TemporaryDirectory(prefix="federated-site-") as scratch:
        spec = {
            "server_address": request["address"], "token": request["token"], "site": site, "tls": tls,
            "root_certificates": str(settings.federated_tls_ca) if tls and settings.federated_tls_ca else None,
            "teacher_dir": str(storage.local_copy(request["model_key"])), "task": request["task"],
            "dataset_path": str(dataset_path), "connect_timeout_s": request["connect_timeout_s"],
            # The site's own grid and hardware figures (its worker's settings), for each round's energy, water
            # and embodied impact.
            "energy": energy_settings(settings, {}),
            "impact_rates": site_impact_rates(),
        }
        code, events = run_site_client(spec, Path(scratch), request["run_timeout_s"])
    rounds = [event["round"] for event in events if event["event"] == "round"]
    errors = [event["message"] for event in events if event["event"] == "error"]
    logger.info("federated job %s: site %s trained rounds %s (exit %d)%s", request["job_id"], site, rounds, code,
                f": {errors[0]}" if errors else "")
    return {"status": "done" if code == 0 else "failed", "rounds": rounds, "errors": errors}
