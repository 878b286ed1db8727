"""The federated step's coordinator: a Flower server that sends the model to the sites' clients, lets each
train locally, and averages what they send back (Flower's FedAvg, FedProx or FedAvgM), round after round.

Runs in Flower's virtualenv (requirements-federated.txt) as `python -m workers.engine.federated.coordinator
--spec spec.json`, started by the step's handler, which reads its JSON-line events on stdout:
listening, sites (who connected), round (one per round: who trained, who dropped out, the losses and bytes
moved), done, error. The initial arrays come from a safetensors file and the final ones go to another.

Flower's legacy `start_server` is used (deprecated since 1.13, still shipped): the newer SuperLink and
SuperNode processes expect `flwr run` to ship an app bundle to long-lived nodes, while here each step starts
one server for one run and site workers start one client each for it.
"""

import json
import logging
import os
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

from dp_accounting import dp_event
from dp_accounting.rdp.rdp_privacy_accountant import RdpAccountant
from flwr.common import FitIns, GetPropertiesIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import ServerConfig, start_server
from flwr.server.strategy import FedAvg, FedAvgM, FedProx
from safetensors.numpy import load_file, save_file

from workers.engine.events import emit, start_child
from workers.engine.federated.privacy import SitePrivacy
from workers.engine.federated.transfer import HALF, outgoing, site_weights
from workers.engine.footprint.site import IMPACT_PREFIX

IDENTIFY_TIMEOUT_S = 60
# What a site reports of a round's energy (site_client.SiteClient._energy), passed on per site.
ENERGY_METRICS = ("cpu_kwh", "gpu_kwh", "ram_kwh", "energy_kwh", "co2e_g", "energy_seconds", "energy_method")
POLL_S = 0.5


class FederationError(Exception):
    """The run cannot go on (too few sites); the message says why."""


def make_strategy(spec: dict, events):
    precision = spec["fit_config"]["transfer_precision"]
    base = {"fedavg": FedAvg, "fedprox": FedProx, "fedavgm": FedAvgM}[spec["aggregation"]]
    options = {
        FedAvg: {},
        FedProx: {"proximal_mu": spec["proximal_mu"]},
        FedAvgM: {"server_learning_rate": spec["server_lr"], "server_momentum": spec["server_momentum"]},
    }[base]

    class SiteStrategy(base):
        """Flower's own averaging, with the sites known by name: only clients that present this run's
        token take part, a round needs min_sites of them, and every round is reported."""

        def __init__(self):
            super().__init__(
                fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=spec["min_sites"],
                min_available_clients=spec["min_sites"], accept_failures=True,
                initial_parameters=ndarrays_to_parameters(_load_arrays(spec["initial_path"], spec["names"])),
                **options,
            )
            self.site_of: dict[str, str] = {}  # Flower client id -> site name
            self.rejected: set[str] = set()
            self.sampled: dict[str, str] = {}
            self.round_started = 0.0
            self.final_arrays = None
            self.rounds: list[dict] = []
            self.current = None  # the round's weights, float32, as the coordinator keeps them
            self.wire_bytes = 0  # their size as sent
            self.privacy = site_privacy(spec)
            # A round that sampled no site moved the weights by the noise alone; Flower skipped it, so its
            # weights are not Flower's: the next round starts from these.
            self.noised_only = None

        def initialize_parameters(self, client_manager):
            # Flower asks for the initial weights once its gRPC server is up: sites can connect from now on.
            emit(events, {"event": "listening", "address": spec["address"]})
            return super().initialize_parameters(client_manager)

        def _identify(self, client_manager) -> None:
            # A copy: Flower's gRPC threads add and remove clients while this runs.
            for cid, proxy in list(client_manager.all().items()):
                if cid in self.site_of or cid in self.rejected:
                    continue
                try:
                    properties = proxy.get_properties(GetPropertiesIns(config={}), IDENTIFY_TIMEOUT_S, None).properties
                except Exception:  # noqa: BLE001 - it disconnected while asked; if it comes back, it is asked again
                    continue
                site = properties.get("site")
                if properties.get("token") != spec["token"] or site not in spec["sites"] or site in self.site_of.values():
                    self.rejected.add(cid)  # a stranger on the port, or a stale client of another run
                    continue
                self.site_of[cid] = site

        def _wait_for_sites(self, client_manager) -> None:
            deadline = time.monotonic() + spec["connect_timeout_s"]
            while True:
                self._identify(client_manager)
                if len(self.site_of) == len(spec["sites"]) or time.monotonic() >= deadline:
                    break
                time.sleep(POLL_S)
            connected = sorted(self.site_of.values())
            missing = sorted(set(spec["sites"]) - set(connected))
            emit(events, {"event": "sites", "connected": connected, "missing": missing})
            if len(connected) < spec["min_sites"]:
                raise FederationError(
                    f"{len(connected)} of {len(spec['sites'])} sites connected within {spec['connect_timeout_s']:g} s "
                    f"({', '.join(missing)} did not); at least {spec['min_sites']} are needed. Check that each site's "
                    "worker runs (compresso worker --site NAME) and can reach this worker's federated address."
                )

        def configure_fit(self, server_round, parameters, client_manager):
            if server_round == 1:
                self._wait_for_sites(client_manager)
            else:
                self._identify(client_manager)  # a site that connected late joins from this round
            available = client_manager.all()
            clients = [available[cid] for cid in sorted(self.site_of, key=self.site_of.get) if cid in available]
            if len(clients) < spec["min_sites"]:
                raise FederationError(
                    f"Round {server_round}: only {len(clients)} sites are still connected "
                    f"({', '.join(sorted(self.site_of[client.cid] for client in clients)) or 'none'}); "
                    f"min_sites_per_round is {spec['min_sites']}."
                )
            if self.sampling:
                # Poisson sampling: each connected site independently, from the OS's entropy.
                clients = [client for client in clients if self.privacy.rng.random() < self.privacy.site_sampling_rate]
            config = dict(spec["fit_config"], server_round=server_round)
            if base is FedProx:
                config["proximal_mu"] = self.proximal_mu
            own = self.noised_only is not None
            self.current = self.noised_only if own else parameters_to_ndarrays(parameters)
            self.noised_only = None
            sent = outgoing(self.current, precision)
            self.wire_bytes = sum(array.nbytes for array in sent)
            fit_ins = FitIns(ndarrays_to_parameters(sent) if own or sent is not self.current else parameters, config)
            self.sampled = {client.cid: self.site_of[client.cid] for client in clients}
            self.round_started = time.monotonic()
            emit(events, {"event": "round_started", "round": server_round, "sites": sorted(self.sampled.values())})
            if not clients:
                self._noise_only_round(server_round, [])
            return [(client, fit_ins) for client in clients]

        def _noise_only_round(self, server_round: int, dropped: list[str]) -> list:
            """No site sampled, or every sampled site dropped out: the round's weights are the noise added to
            the last ones. When none was sampled Flower skips the round's fit, and the next starts from these."""
            noised, private = self.privacy.aggregate(spec["names"], self.current, {}, denominator=self.denominator)
            self.noised_only = self.final_arrays = noised
            if base is FedAvgM:
                self.initial_parameters = ndarrays_to_parameters(noised)  # where its next server step starts
            self._record(server_round, {}, dropped, private)
            return noised

        def aggregate_fit(self, server_round, results, failures):
            trained = {self.sampled[proxy.cid]: fit_res for proxy, fit_res in results}
            dropped = sorted(set(self.sampled.values()) - set(trained))
            if self.sampling and not trained:
                return ndarrays_to_parameters(self._noise_only_round(server_round, dropped)), {}
            if len(trained) < spec["min_sites"] and not self.sampling:
                raise FederationError(
                    f"Round {server_round}: {len(trained)} sites sent results ({', '.join(sorted(trained)) or 'none'}; "
                    f"{', '.join(dropped)} dropped out); min_sites_per_round is {spec['min_sites']}."
                )
            if precision == HALF:
                results = [(proxy, replace(res, parameters=ndarrays_to_parameters(
                    site_weights(parameters_to_ndarrays(res.parameters), self.current, precision))))
                    for proxy, res in results]
            private = None
            if self.privacy is not None:
                results, private = self._private_average(results)
            aggregated, metrics = super().aggregate_fit(server_round, results, failures)
            self.final_arrays = parameters_to_ndarrays(aggregated)
            self._record(server_round, trained, dropped, private)
            return aggregated, metrics

        @property
        def sampling(self) -> bool:
            return self.privacy is not None and self.privacy.site_sampling_rate < 1

        @property
        def denominator(self) -> float:
            """What the private average divides by: the expected number of sites in a round."""
            return self.privacy.site_sampling_rate * len(spec["sites"])

        def _record(self, server_round: int, trained: dict, dropped: list[str], private) -> None:  # noqa: ANN001
            array_bytes = self.wire_bytes  # each way, in the transfer precision
            record = {
                "round": server_round,
                "sites": sorted(trained),
                "dropped": dropped,
                "examples": {site: res.num_examples for site, res in sorted(trained.items())},
                "loss_before": {site: res.metrics.get("loss_before") for site, res in sorted(trained.items())},
                "loss_after": {site: res.metrics.get("loss_after") for site, res in sorted(trained.items())},
                "site_seconds": {site: res.metrics.get("seconds") for site, res in sorted(trained.items())},
                "site_devices": {site: res.metrics.get("device") for site, res in sorted(trained.items())},
                # Measured at each site, on its own grid; absent where a site measured nothing.
                "site_energy_kwh": {site: res.metrics["energy_kwh"] for site, res in sorted(trained.items())
                                    if "energy_kwh" in res.metrics},
                "site_co2e_g": {site: res.metrics["co2e_g"] for site, res in sorted(trained.items())
                                if "co2e_g" in res.metrics},
                "site_country": {site: res.metrics["country"] for site, res in sorted(trained.items())
                                 if "country" in res.metrics},
                "site_energy": {
                    site: {name: res.metrics[name] for name in ENERGY_METRICS}
                    for site, res in sorted(trained.items()) if all(name in res.metrics for name in ENERGY_METRICS)
                },
                # Each site's water and embodied impact, from its own settings (footprint.site); absent where none.
                "site_impact": {
                    site: {name.removeprefix(IMPACT_PREFIX): value for name, value in res.metrics.items()
                           if name.startswith(IMPACT_PREFIX)}
                    for site, res in sorted(trained.items()) if any(name.startswith(IMPACT_PREFIX) for name in res.metrics)
                },
                "seconds": round(time.monotonic() - self.round_started, 3),
                # The weights went to every sampled site and came back from those that finished.
                "bytes_sent": array_bytes * len(self.sampled),
                "bytes_received": array_bytes * len(trained),
            }
            if private is not None:
                record["privacy"] = {"update_norms": private.update_norms, "clipped": private.clipped,
                                     "noise_std": private.noise_std}
            self.rounds.append(record)
            emit(events, {"event": "round", **record})

        def _private_average(self, results):
            """The sites' results replaced by one: the clipped, noised average, with equal weights. The base
            strategy then takes it as the round's average (fedavgm steps along it)."""
            site_arrays = {self.sampled[proxy.cid]: parameters_to_ndarrays(res.parameters) for proxy, res in results}
            averaged, private = self.privacy.aggregate(spec["names"], self.current, site_arrays,
                                                       denominator=self.denominator if self.sampling else None)
            proxy, first = results[0]
            return [(proxy, replace(first, parameters=ndarrays_to_parameters(averaged), num_examples=1))], private

    return SiteStrategy()


def epsilon_spent(noise_multiplier: float, rounds: int, delta: float, sampling_rate: float = 1.0) -> float | None:
    """(epsilon, delta)-DP after `rounds` rounds of the Gaussian mechanism, each round on a Poisson sample of
    the sites (every site when the rate is 1), by dp-accounting's RDP accountant; None before any round."""
    if rounds == 0:
        return None
    # The sampled Gaussian's RDP series does not converge at some fractional orders; the accountant leaves those
    # orders out and says so on absl's logger, once per order, into the job's log. The epsilon is still sound.
    logging.getLogger("absl").setLevel(logging.ERROR)
    accountant = RdpAccountant()
    event = dp_event.GaussianDpEvent(noise_multiplier)
    if sampling_rate < 1:
        event = dp_event.PoissonSampledDpEvent(sampling_rate, event)
    accountant.compose(event, rounds)
    return float(accountant.get_epsilon(delta))


def site_privacy(spec: dict) -> SitePrivacy | None:
    settings = spec.get("differential_privacy")
    if not settings:
        return None
    masked = set(json.loads(spec["fit_config"]["masked"]))
    return SitePrivacy(**settings, trained=set(spec["trained"]), masked=masked)


def _load_arrays(path: str, names: list[str]):
    tensors = load_file(path)
    return [tensors[name] for name in names]


def main() -> int:
    # An engine killed outright must not leave its coordinator listening: it dies with the engine.
    spec, events = start_child(__doc__)
    spec["fit_config"]["fixed_tensors"] = Path(spec.pop("fixed_path")).read_bytes()
    strategy = make_strategy(spec, events)
    tls = spec.get("tls")
    try:
        # Flower's gRPC server takes the CA's certificate, its own and its key, as PEM bytes.
        certificates = tuple(Path(tls[part]).read_bytes() for part in ("ca", "cert", "key")) if tls else None
        start_server(
            server_address=spec["address"], strategy=strategy, certificates=certificates,
            config=ServerConfig(num_rounds=spec["rounds"], round_timeout=spec["round_timeout_s"]),
        )
    except Exception as exc:  # noqa: BLE001 - whatever stopped the run, the engine must hear it
        if not isinstance(exc, FederationError):
            traceback.print_exc(file=sys.stderr)
        emit(events, {"event": "error", "message": str(exc) if isinstance(exc, FederationError)
                      else f"the coordinator failed: {type(exc).__name__}: {exc}"})
        # start_server leaves its gRPC server's threads running when a round raises: end the process now.
        os._exit(2)
    if strategy.final_arrays is None:
        emit(events, {"event": "error", "message": "No round produced weights."})
        return 2
    save_file(dict(zip(spec["names"], strategy.final_arrays, strict=True)), spec["result_path"])
    privacy = strategy.privacy
    epsilon = (epsilon_spent(privacy.noise_multiplier, len(strategy.rounds), privacy.delta, privacy.site_sampling_rate)
               if privacy else None)
    emit(events, {"event": "done", "rounds": strategy.rounds, "epsilon": epsilon})
    return 0


if __name__ == "__main__":
    sys.exit(main())
