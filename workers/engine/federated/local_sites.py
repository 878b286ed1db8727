"""Every site's client on this machine: what a site's worker does when the federated step announces its
address, without Celery. For the engine's tests and benchmarks (a simulation of several sites, each still a
separate process that reads only its own dataset file)."""

import json
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from workers.engine.federated.config import default_federated_python
from workers.engine.venvs import REPOSITORY_ROOT, repository_env


class LocalSites:
    """Use as a StepContext's `announce`; `on_client_event(site, event, process)` sees each client's events."""

    def __init__(
        self, scratch: Path, teacher_dir: Path, datasets: dict[str, Path],
        on_client_event: Callable[[str, dict, subprocess.Popen], None] = lambda site, event, process: None,
        threads_per_site: int | None = None, energy: dict[str, dict] | None = None,
        impact_rates: dict[str, dict] | None = None, tls_ca: dict[str, Path] | None = None,
    ):
        self.scratch, self.teacher_dir, self.datasets = scratch, teacher_dir, datasets
        self.on_client_event, self.threads_per_site = on_client_event, threads_per_site
        self.energy = energy or {}  # per site: the EnergySettings its worker would give (none: not measured)
        self.impact_rates = impact_rates or {}  # per site: its water and embodied rates (footprint.site)
        self.tls_ca = tls_ca or {}  # per site: the CA it trusts over TLS (COMPRESSO_FEDERATED_TLS_CA)
        self.processes: dict[str, subprocess.Popen] = {}
        self.events: dict[str, list[dict]] = {}
        self.announcements: list[dict] = []

    def __call__(self, event: dict) -> None:
        if event.get("event") != "federation":
            return
        self.announcements.append(event)
        self.scratch.mkdir(parents=True, exist_ok=True)
        threads = {"OMP_NUM_THREADS": str(self.threads_per_site), "MKL_NUM_THREADS": str(self.threads_per_site)}
        env = repository_env(**(threads if self.threads_per_site else {}))
        for entry in event["sites"]:
            site = entry["site"]
            if site not in self.datasets:
                continue  # as a site whose worker is down
            spec = {
                "server_address": event["address"], "token": event["token"], "site": site,
                "teacher_dir": str(self.teacher_dir), "task": event["task"], "dataset_path": str(self.datasets[site]),
                "connect_timeout_s": event["connect_timeout_s"], "energy": self.energy.get(site),
                "impact_rates": self.impact_rates.get(site), "tls": event.get("tls", False),
                "root_certificates": str(self.tls_ca[site]) if site in self.tls_ca else None,
            }
            spec_path = self.scratch / f"site-{site}.json"
            spec_path.write_text(json.dumps(spec), encoding="utf-8")
            with (self.scratch / f"site-{site}.log").open("w") as log:
                process = subprocess.Popen(
                    [str(default_federated_python()), "-m", "workers.engine.federated.site_client", "--spec",
                     str(spec_path)], stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPOSITORY_ROOT, env=env,
                )
            self.processes[site], self.events[site] = process, []
            threading.Thread(target=self._follow, args=(site, process), daemon=True).start()

    def _follow(self, site: str, process: subprocess.Popen) -> None:
        for line in process.stdout:
            event = json.loads(line)
            self.events[site].append(event)
            self.on_client_event(site, event, process)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait()
