"""The `federated` step's handler: runs the coordinator (Flower's server, in its own virtualenv) for the
current model, tells the worker where it listens so that the sites' workers start their clients (the
"federation" event of the engine's stream), follows the rounds, and loads the averaged weights back."""

import json
import math
import logging
import os
import secrets
import socket
import subprocess
from pathlib import Path

from safetensors.numpy import load_file, save_file

from workers.engine.energy.schema import SiteImpact, StageEnergy
from workers.engine.errors import EngineUserError
from workers.engine.federated.config import FederatedConfig, FederationSettings, default_federated_python
from workers.engine.federated.weights import load_arrays, model_description, pruned_names, split_state
from workers.engine.footprint.site import EMBODIED
from workers.engine.state import ModelState, StepContext
from workers.engine.venvs import REPOSITORY_ROOT, repository_env
from workers.parent_death import PARENT_PID

logger = logging.getLogger(__name__)

# After its last event the coordinator stops Flower's server (a second, for the clients to hear it).
COORDINATOR_EXIT_S = 30



def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _coordinator_spec(
    config: FederatedConfig, state: ModelState, context: StepContext, settings: FederationSettings, address: str,
    token: str,
) -> tuple[dict, list[str]]:
    names, arrays, fixed = split_state(state.torch_model)
    masked = pruned_names(state.torch_model, names, arrays)
    initial_path, fixed_path = context.work_dir / "initial.safetensors", context.work_dir / "fixed.bin"
    save_file(dict(zip(names, arrays)), str(initial_path))
    description = model_description(state.config_dir, fixed)
    fixed_path.write_bytes(description["fixed_tensors"])
    spec = {
        "address": address,
        "token": token,
        "sites": [entry.site for entry in config.sites],
        "min_sites": config.required_sites,
        "rounds": config.rounds,
        "aggregation": config.aggregation,
        "proximal_mu": config.proximal_mu,
        "server_lr": config.server_step[0],
        "server_momentum": config.server_step[1],
        "differential_privacy": config.differential_privacy.model_dump() if config.differential_privacy else None,
        "trained": trained_names(state.torch_model, names),
        "connect_timeout_s": config.connect_timeout_s,
        "round_timeout_s": config.round_timeout_s,
        "tls": ({"ca": settings.tls_ca, "cert": settings.tls_cert, "key": settings.tls_key} if settings.tls else None),
        "initial_path": str(initial_path),
        "fixed_path": str(fixed_path),
        "result_path": str(context.work_dir / "result.safetensors"),
        "names": names,
        # Every round's instructions to the sites: how to rebuild the model, and how to train it.
        "fit_config": {
            "config_files": description["config_files"],
            "names": json.dumps(names),
            "masked": json.dumps(masked),
            "task": state.task,
            "sequence_length": context.sequence_length,
            "local_steps": config.local_steps,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "temperature": config.temperature,
            "alpha": config.alpha,
            "hidden_state_weight": config.hidden_state_weight,
            "seed": config.seed,
            "lr_schedule": config.lr_schedule,
            "rounds": config.rounds,
            "transfer_precision": config.transfer_precision,
        },
    }
    return spec, names


def trained_names(model, names: list[str]) -> list[str]:  # noqa: ANN001 - a torch module
    """The arrays the sites train: the parameters, less the input token embeddings, which recovery keeps
    frozen (training.loop.recover). Differential privacy leaves the others alone."""
    embeddings = model.get_input_embeddings().weight
    parameters = {name for name, parameter in model.named_parameters() if parameter is not embeddings}
    return [name for name in names if name in parameters]


def _summary(rounds: list[dict], config: FederatedConfig, epsilon: float | None) -> dict:
    last = rounds[-1]
    return {
        "aggregation": config.aggregation,
        **(dict(zip(("server_lr", "server_momentum"), config.server_step)) if config.aggregation == "fedavgm" else {}),
        "lr_schedule": config.lr_schedule,
        "transfer_precision": config.transfer_precision,
        **({"differential_privacy": _privacy_summary(rounds, config, epsilon)} if config.differential_privacy else {}),
        "rounds_completed": len(rounds),
        "sites": [entry.site for entry in config.sites],
        "sites_in_last_round": last["sites"],
        "dropped": sorted({site for record in rounds for site in record["dropped"]}),
        "examples_per_site": last["examples"],
        "local_steps": config.local_steps,
        # Only weights moved: the sites' rows never left them.
        "bytes_sent_to_sites": sum(record["bytes_sent"] for record in rounds),
        "bytes_received_from_sites": sum(record["bytes_received"] for record in rounds),
        "site_energy": _site_energy(rounds),
        "rounds": rounds,
    }


def _privacy_summary(rounds: list[dict], config: FederatedConfig, epsilon: float | None) -> dict:
    rate = config.differential_privacy.site_sampling_rate
    sampled = rate < 1
    return {
        **config.differential_privacy.model_dump(),
        "epsilon": epsilon,
        "accountant": "dp-accounting RDP, Gaussian mechanism composed over the rounds"
                      + (", each on a Poisson sample of the sites" if sampled else ""),
        "adjacency": "one site added or removed; "
                     + (f"each site sampled with probability {rate:g} per round, the average divided by the expected "
                        f"{rate * len(config.sites):g} sites" if sampled else "every site sampled in every round"),
        "sites_per_round": [len(record["sites"]) for record in rounds],
        "noise_std_per_round": [record["privacy"]["noise_std"] for record in rounds],
        "clipped": {str(record["round"]): record["privacy"]["clipped"] for record in rounds},
    }


def _site_energy(rounds: list[dict]) -> dict:
    """Each site's energy and CO2e over every round it trained, on its own grid (also booked as stages of the
    job's energy: site_stages)."""
    sites = sorted({site for record in rounds for site in record["site_energy_kwh"]})
    per_site = {
        site: {
            "energy_kwh": sum(record["site_energy_kwh"].get(site, 0.0) for record in rounds),
            "co2e_g": sum(record["site_co2e_g"].get(site, 0.0) for record in rounds),
            "country": next(record["site_country"][site] for record in rounds if site in record["site_country"]),
        }
        for site in sites
    }
    return {
        "sites": per_site,
        "energy_kwh": sum(entry["energy_kwh"] for entry in per_site.values()),
        "co2e_g": sum(entry["co2e_g"] for entry in per_site.values()),
    }


def site_stages(rounds: list[dict]) -> list[StageEnergy]:
    """One energy stage per site: its training over every round, with the PUE and grid of its own worker. The
    pipeline names each after the step (step_<n>.federated.site_<name>)."""
    sites = sorted({site for record in rounds for site in record.get("site_energy", {})})
    stages = []
    for site in sites:
        measured = [record["site_energy"][site] for record in rounds if site in record.get("site_energy", {})]
        methods = {entry["energy_method"] for entry in measured}
        stages.append(StageEnergy(
            stage=f"site_{site}", site=site,
            duration_s=math.fsum(entry["energy_seconds"] for entry in measured),
            **{name: math.fsum(entry[name] for entry in measured)
               for name in ("cpu_kwh", "gpu_kwh", "ram_kwh", "energy_kwh", "co2e_g")},
            method=methods.pop() if len(methods) == 1 else "mixed",
            site_impact=_site_impact([record.get("site_impact", {}).get(site) for record in rounds
                                      if site in record.get("site_energy", {})]),
        ))
    return stages


def _site_impact(per_round: list[dict | None]) -> SiteImpact | None:
    """A site's water and embodied impact over its measured rounds; None unless every round sent its water, and
    no embodied figure unless every round sent that too."""
    if not per_round or any(impact is None for impact in per_round):
        return None
    total = {name: math.fsum(impact[name] for impact in per_round) for name in ("it_energy_kwh", "onsite_l", "offsite_l")}
    total.update({name: math.fsum(impact[name] for impact in per_round) for name in EMBODIED
                  if all(name in impact for impact in per_round)})
    return SiteImpact(**total)


def apply_federated(config: FederatedConfig, state: ModelState, context: StepContext) -> ModelState:
    if state.torch_model is None:
        raise ValueError("federated needs a torch model.")
    settings = context.federation or FederationSettings()
    python = Path(settings.python) if settings.python else default_federated_python()
    if not python.exists():
        raise EngineUserError(
            f"federated needs Flower's interpreter {python}, which does not exist: run `make install` (it builds "
            ".venv-federated), or set COMPRESSO_FEDERATED_PYTHON to a Python that has flwr installed."
        )
    port = _free_port(settings.bind_host)
    token = secrets.token_hex(16)
    spec, names = _coordinator_spec(config, state, context, settings, f"{settings.bind_host}:{port}", token)
    spec_path = context.work_dir / "coordinator.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    env = repository_env(**{PARENT_PID: str(os.getpid())})
    # stderr is the engine's own, so Flower's log lands in the job's log; stdout carries its events.
    process = subprocess.Popen(
        [str(python), "-m", "workers.engine.federated.coordinator", "--spec", str(spec_path)],
        stdout=subprocess.PIPE, text=True, env=env, cwd=REPOSITORY_ROOT,
    )
    final = None
    try:
        for line in process.stdout:
            event = json.loads(line)
            kind = event["event"]
            if kind == "listening":
                context.announce({
                    "event": "federation",
                    "address": f"{settings.advertise_host or settings.bind_host}:{port}",
                    "token": token,
                    # Sites connect over TLS when the coordinator has a certificate, and check it against their CA.
                    "tls": settings.tls,
                    "sites": [entry.model_dump() for entry in config.sites],
                    "task": state.task,
                    "connect_timeout_s": config.connect_timeout_s,
                    "run_timeout_s": config.connect_timeout_s + config.rounds * config.round_timeout_s,
                })
                logger.info("federated: waiting for %d sites on port %d (%s)", len(config.sites), port,
                            "TLS" if settings.tls else "plain gRPC, no TLS")
            elif kind == "sites":
                logger.info("federated: sites connected: %s; missing: %s",
                            ", ".join(event["connected"]) or "none", ", ".join(event["missing"]) or "none")
            elif kind == "round":
                logger.info(
                    "federated: round %d/%d from %s%s in %.1f s", event["round"], config.rounds,
                    ", ".join(event["sites"]) or "no site (the weights moved by the privacy noise alone)",
                    f" ({', '.join(event['dropped'])} dropped out)" if event["dropped"] else "", event["seconds"],
                )
                context.on_progress(event["round"] / config.rounds)
            elif kind in ("done", "error"):
                final = event
                break
    finally:
        if final is None:
            # Interrupted (a SIGTERM to the engine: a time limit), or it ended without a word: it must not
            # stay listening.
            process.kill()
            code = process.wait()
        else:
            try:
                code = process.wait(timeout=COORDINATOR_EXIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
    if final is not None and final["event"] == "error":
        raise EngineUserError(f"The federated step failed: {final['message']}")
    if final is None or code != 0:
        raise RuntimeError(f"The federated coordinator failed (exit {code}); its log is above in the job log.")
    result = load_file(spec["result_path"])
    load_arrays(state.torch_model, names, [result[name] for name in names])
    context.details.update(_summary(final["rounds"], config, final.get("epsilon")))
    context.site_energy = site_stages(final["rounds"])
    devices = sorted({device for record in final["rounds"] for device in record["site_devices"].values() if device})
    context.placement["training"] = f"sites ({', '.join(devices)})" if devices else "sites"
    context.placement["aggregation"] = "cpu"
    return state
