"""A site's side of a federated step: a Flower client that trains the model it is sent on the site's own
rows, which it reads from the site's storage and never sends anywhere, and returns only the new weights,
the number of examples and the losses.

Runs in Flower's virtualenv as `python -m workers.engine.federated.site_client --spec spec.json`, started by
the site's worker (workers/tasks/federated_site.py). Spec: server_address, token, site, teacher_dir (the
job's original model, which each round's model learns to reproduce), task, dataset_path, device,
connect_timeout_s, tls and root_certificates (a PEM file; empty: the system's roots). Events on stdout:
connecting, round (per round trained), done, error.
"""

import json
import logging
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from flwr.client import NumPyClient, start_client

from workers.engine.energy.meter import EnergyMeter
from workers.engine.energy.settings import EnergySettings
from workers.engine.errors import EngineUserError
from workers.engine.evaluation.data import load_eval_dataset
from workers.engine.evaluation.quality import encode_labels
from workers.engine.events import emit, start_child
from workers.engine.federated.transfer import site_reply
from workers.engine.federated.weights import build_model, state_arrays
from workers.engine.footprint.site import IMPACT_PREFIX, impact_of
from workers.engine.loading import load_model, load_tokenizer
from workers.engine.training.loop import recover, zero_masks
from workers.engine.training.settings import RecoverySettings

logger = logging.getLogger("workers.engine.federated.site")
# Rows a site trains on at most; a site's dataset may be larger, the first rows are used (file order).
MAX_SITE_ROWS = 100_000


class SiteClient(NumPyClient):
    def __init__(self, spec: dict, events):
        self.spec, self.events = spec, events
        # A site trains where it can: its GPU if it has one.
        self.device = spec.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self.task = spec["task"]
        teacher_dir = Path(spec["teacher_dir"])
        self.tokenizer = load_tokenizer(teacher_dir)
        self.teacher = load_model(teacher_dir, self.task, self.device)
        dataset = load_eval_dataset(Path(spec["dataset_path"]), MAX_SITE_ROWS)
        self.texts = dataset.texts
        self.labels = None
        if self.task == "text-classification" and dataset.labels is not None:
            config = self.teacher.config
            self.labels = encode_labels(dataset.labels, config.label2id, config.num_labels).tolist()
        self.scratch = Path(tempfile.mkdtemp(prefix="compresso-site-"))
        # Each round's energy, on this site's own grid (its worker's COMPRESSO_CARBON_COUNTRY); none without settings.
        self.meter = EnergyMeter(EnergySettings(**spec["energy"])) if spec.get("energy") else None

    def get_properties(self, config):
        return {"site": self.spec["site"], "token": self.spec["token"]}

    def fit(self, parameters, config):
        started = time.perf_counter()
        server_round = int(config["server_round"])
        emit(self.events, {"event": "training", "round": server_round})
        names = json.loads(config["names"])
        student = build_model(self.scratch / f"round-{server_round}", config, names, parameters, self.task, self.device)
        settings = RecoverySettings(
            max_steps=int(config["local_steps"]), batch_size=int(config["batch_size"]), lr=float(config["lr"]),
            temperature=float(config["temperature"]), alpha=float(config["alpha"]),
            hidden_state_weight=float(config["hidden_state_weight"]), augment="none",
            # Each round shuffles differently, and so does each site.
            seed=int(config["seed"]) + server_round,
        )
        masks = zero_masks(student, json.loads(config["masked"]))
        with self._measured(server_round) as measurement:
            stats = recover(
                student, self.teacher, self.task, self.texts, self.labels, self.tokenizer, settings,
                int(config["sequence_length"]), masks=masks, proximal_mu=float(config.get("proximal_mu", 0.0)),
                schedule_span=self._schedule_span(config, server_round),
            )
        seconds = round(time.perf_counter() - started, 3)
        energy = self._energy(measurement)
        emit(self.events, {
            "event": "round", "round": server_round, "examples": len(self.texts), "steps": stats.steps,
            "loss_before": stats.initial_loss, "loss_after": stats.final_loss, "seconds": seconds, **energy,
        })
        metrics = {"loss_before": float(stats.initial_loss), "loss_after": float(stats.final_loss), "seconds": seconds,
                   "device": self.device, **energy}
        reply = site_reply(state_arrays(student, names), parameters, config["transfer_precision"])
        return reply, len(self.texts), metrics

    @staticmethod
    def _schedule_span(config, server_round: int) -> tuple[int, int] | None:  # noqa: ANN001
        """across_rounds: this round's stretch of one schedule over every round's local steps."""
        if config.get("lr_schedule") != "across_rounds":
            return None
        local_steps = int(config["local_steps"])
        return (server_round - 1) * local_steps, int(config["rounds"]) * local_steps

    def _measured(self, server_round: int):
        return self.meter.measure(f"round-{server_round}") if self.meter is not None else nullcontext(None)

    def _energy(self, measurement) -> dict:  # noqa: ANN001
        """The round's energy (PUE included), CO2e on this site's grid, and water and embodied impact from the
        site's rates; empty when it was not measured."""
        if measurement is None or measurement.reading is None:
            return {}
        reading, pue = measurement.reading, self.meter.settings.pue
        kwh = reading.device_kwh * pue
        rates = self.spec.get("impact_rates")
        impact = impact_of(rates, kwh, reading.duration_s) if rates else {}
        return {"energy_kwh": kwh, "co2e_g": kwh * self.meter.intensity,
                **{IMPACT_PREFIX + name: value for name, value in impact.items()},
                "country": self.meter.settings.country or "world average",
                # The split and method, so that the job books the site's training as a stage of its own.
                "cpu_kwh": reading.cpu_kwh * pue, "gpu_kwh": reading.gpu_kwh * pue, "ram_kwh": reading.ram_kwh * pue,
                "energy_seconds": reading.duration_s, "energy_method": self.meter.method()}


def main() -> int:
    spec, events = start_child(__doc__)  # a site worker that stops takes its client with it
    try:
        client = SiteClient(spec, events)
    except (EngineUserError, OSError, ValueError) as exc:
        emit(events, {"event": "error", "message": f"The site could not prepare its data or model: {exc}"})
        return 2
    torch.manual_seed(0)
    tls = bool(spec.get("tls"))
    emit(events, {"event": "connecting", "address": spec["server_address"], "rows": len(client.texts), "tls": tls})
    # Over TLS the coordinator's certificate is checked against the site's CA (root_certificates), or the
    # system's roots when the site names none.
    roots = Path(spec["root_certificates"]).read_bytes() if tls and spec.get("root_certificates") else None
    start_client(
        server_address=spec["server_address"], client=client.to_client(), insecure=not tls,
        root_certificates=roots, max_wait_time=float(spec["connect_timeout_s"]),
    )
    emit(events, {"event": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
