"""The `federated` technique's params (the handler is workers.engine.federated.handler): kept apart so
that the API validates recipes without importing torch."""

import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workers.engine.registry import TechniqueConfig
from workers.engine.venvs import sibling_venv_python

SITE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# The Celery queue a site's worker consumes (`compresso worker --site NAME`).
SITE_QUEUE_PREFIX = "site."
MAX_SITES = 64
# fedavgm's server step: twice the sites' average change, no momentum. On MiniLM pruned 50% at three non-IID
# sites (12 rounds x 30 steps, across_rounds) that reached 0.9513 held-out fidelity against 0.9466 for plain
# averaging and 0.9579 central; a step of 3 overshot (0.9215), and FedAvgM's usual momentum 0.9 (Hsu et al.,
# 2019) too (0.9347, per_round) (benchmarks/results/federated_bench_levers.md).
DEFAULT_SERVER_LR = 2.0
DEFAULT_SERVER_MOMENTUM = 0.0


def site_queue(site: str) -> str:
    return f"{SITE_QUEUE_PREFIX}{site}"


def default_federated_python() -> Path:
    """The interpreter of .venv-federated beside the running venv, which `make install` builds."""
    return sibling_venv_python(".venv-federated")


class SiteDataset(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    site: str = Field(description="The site's name, as its worker was started with (compresso worker --site NAME).")
    dataset_id: str = Field(
        min_length=1,
        description="A dataset registered as held by that site (POST /v1/sites/{site}/datasets): its rows stay there.",
    )

    @field_validator("site")
    @classmethod
    def _site_name(cls, value: str) -> str:
        if not SITE_NAME.fullmatch(value):
            raise ValueError("a site name is 1 to 63 lowercase letters, digits or '-', starting with a letter or digit")
        return value


class DifferentialPrivacy(BaseModel):
    """Site-level differential privacy: the result hides whether any one site took part."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    noise_multiplier: float = Field(
        gt=0, le=100,
        description="z: each round's Gaussian noise on the sum of the sites' clipped changes has std z x "
        "clipping_norm. More noise, smaller epsilon, and a noisier model: it takes many sites (thousands of "
        "phones, not three hospitals) for the average to drown it.",
    )
    clipping_norm: float = Field(
        gt=0, le=1e6, description="C: each site's change to a round's weights is scaled down to at most this L2 norm."
    )
    delta: float = Field(
        1e-5, gt=0, lt=1, description="The delta of the (epsilon, delta) guarantee; keep it below 1 / number of sites."
    )
    site_sampling_rate: float = Field(
        1.0, gt=0, le=1,
        description="q: each round takes each connected site with probability q, independently (Poisson sampling), "
        "which amplifies the privacy: a site may not even be in a round. The average divides by the expected number "
        "of sites (q x sites listed), and a round that samples no site moves the weights by the noise alone. 1: every "
        "site, every round.",
    )


class FederatedConfig(TechniqueConfig):
    technique: ClassVar[str] = "federated"
    version: ClassVar[int] = 1
    description: ClassVar[str] = (
        "Federated recovery or distillation: the current model (the output of earlier steps) learns to reproduce "
        "the uploaded original on data held at several sites, which never leaves them. Each round, every site "
        "trains the model locally for local_steps steps and sends back only its weights; the coordinator averages "
        "them (fedavg; fedprox, which keeps each site's weights near the round's; or fedavgm, a server-side step "
        "along the average's change) and sends the result out. "
        "Runs on Flower; each site runs its own worker (compresso worker --site NAME)."
    )
    requires_data: ClassVar[bool] = False  # the sites' data, not the job's dataset

    sites: list[SiteDataset] = Field(min_length=1, max_length=MAX_SITES, description="Where the data is, one entry per site.")
    rounds: int = Field(3, ge=1, le=1000, description="Rounds of local training then aggregation.")
    local_steps: int = Field(50, ge=1, le=100_000, description="Optimizer steps each site takes per round.")
    aggregation: Literal["fedavg", "fedprox", "fedavgm"] = Field(
        "fedavg",
        description="fedavg: the sites' weights averaged, weighted by their examples. fedprox: the same average, but "
        "each site's loss adds proximal_mu/2 x the squared distance to the round's weights, which holds back sites "
        "whose data differs from the others'. fedavgm: the average's change from the round's weights is a "
        "gradient for a server-side SGD with momentum (server_lr, server_momentum), which keeps moving along "
        "what the rounds agree on.",
    )
    proximal_mu: float = Field(0.01, gt=0, le=100, description="fedprox only: weight of the proximal term.")
    server_lr: float | None = Field(
        None, gt=0, le=10, description="fedavgm only: the server's step along the averaged change; empty: 2.0."
    )
    server_momentum: float | None = Field(
        None, ge=0, lt=1,
        description="fedavgm only: the share of the previous rounds' change carried into each round; empty: 0.",
    )
    # across_rounds measured 0.9466 against per_round's 0.9456 (fedavg, the setup above): no worse, and it is
    # the schedule central training runs.
    lr_schedule: Literal["per_round", "across_rounds"] = Field(
        "across_rounds",
        description="per_round: each round's local training warms up to lr and decays to zero. across_rounds: one "
        "warmup-then-decay over every round's steps, as central training would run, each round taking its stretch.",
    )
    transfer_precision: Literal["float32", "float16"] = Field(
        "float32",
        description="float16: each round's weights go out to the sites, and each site's change comes back, in half "
        "precision, half the bytes each way. The coordinator keeps float32 weights and adds each site's change to "
        "them, so rounding does not pile up over the rounds.",
    )
    differential_privacy: DifferentialPrivacy | None = Field(
        None,
        description="Adds site-level differential privacy: every site's change is clipped, the changes are "
        "averaged with equal weight, and Gaussian noise is added, on the weights the sites train only (not the "
        "frozen token embeddings, not pruned zeros). The report gives the epsilon spent (dp-accounting's RDP "
        "accountant, one site added or removed, with the rounds' site sampling) and which sites were clipped.",
    )
    min_sites_per_round: int | None = Field(
        None, ge=1, le=MAX_SITES,
        description="A round whose results come from fewer sites fails the step. Sites that drop out (a worker "
        "stopped, a network cut) are tolerated down to this. Empty: every site listed. With "
        "differential_privacy.site_sampling_rate below 1 it counts the connected sites a round samples from.",
    )
    connect_timeout_s: float = Field(
        300, gt=0, le=24 * 3600,
        description="How long the first round waits for every site to connect; it then starts with those that did, "
        "if they are at least min_sites_per_round.",
    )
    round_timeout_s: float = Field(
        1800, gt=0, le=7 * 24 * 3600,
        description="A site that has not answered a round within this many seconds counts as dropped out.",
    )
    batch_size: int = Field(16, ge=1, le=256, description="Examples per local optimizer step.")
    # Recovery's rate: on MiniLM pruned 50%, 4 rounds x 30 steps at three non-IID sites reached 0.9208 held-out
    # fidelity at 2e-4 and 0.9028 at 1e-4 (benchmarks/results/federated_bench*.md).
    lr: float = Field(2e-4, gt=0, le=1, description="Peak learning rate of each site's AdamW (see lr_schedule).")
    temperature: float = Field(2.0, gt=0, le=100, description="Softens both output distributions before the KL term.")
    alpha: float = Field(
        0.5, ge=0, le=1,
        description="Classifiers with labelled site data: weight of the cross-entropy on the labels; 1 - alpha "
        "weighs the KL to the original.",
    )
    hidden_state_weight: float = Field(
        30.0, ge=0, le=100, description="Encoders only: weight of the per-layer hidden-state MSE (see distill)."
    )
    seed: int = Field(0, ge=0, description="Seeds each site's shuffling, for repeatable runs.")

    @field_validator("sites")
    @classmethod
    def _distinct_sites(cls, value: list[SiteDataset]) -> list[SiteDataset]:
        names = [entry.site for entry in value]
        if len(set(names)) != len(names):
            raise ValueError("each site may appear once; a site's datasets are one entry")
        return value

    @model_validator(mode="after")
    def _enough_sites(self) -> "FederatedConfig":
        if self.min_sites_per_round is not None and self.min_sites_per_round > len(self.sites):
            raise ValueError(
                f"min_sites_per_round is {self.min_sites_per_round}, but only {len(self.sites)} sites are listed"
            )
        return self

    @model_validator(mode="after")
    def _server_params_need_fedavgm(self) -> "FederatedConfig":
        given = [name for name in ("server_lr", "server_momentum") if getattr(self, name) is not None]
        if given and self.aggregation != "fedavgm":
            raise ValueError(f"{' and '.join(given)} apply to aggregation fedavgm only, not {self.aggregation}")
        return self

    @property
    def server_step(self) -> tuple[float, float]:
        """fedavgm's (server_lr, server_momentum), defaults filled in."""
        return (self.server_lr if self.server_lr is not None else DEFAULT_SERVER_LR,
                self.server_momentum if self.server_momentum is not None else DEFAULT_SERVER_MOMENTUM)

    @property
    def required_sites(self) -> int:
        return self.min_sites_per_round if self.min_sites_per_round is not None else len(self.sites)

    def referenced_site_datasets(self) -> list[SiteDataset]:
        return list(self.sites)


class FederationSettings(BaseModel):
    """The worker's side of a federated step (its settings, not the recipe's): where the coordinator listens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    python: str | None = Field(None, description="Flower's interpreter; empty: .venv-federated beside the running venv.")
    bind_host: str = Field("127.0.0.1", description="Where the coordinator listens (a free port is picked).")
    advertise_host: str | None = Field(None, description="The host sites connect to; empty: bind_host.")
    tls_cert: str | None = Field(None, description="PEM certificate the coordinator presents; with it, TLS.")
    tls_key: str | None = Field(None, description="PEM private key of tls_cert.")
    tls_ca: str | None = Field(None, description="PEM of the authority that signed tls_cert (Flower sends it too).")

    @model_validator(mode="after")
    def _tls_files_together(self) -> "FederationSettings":
        given = [self.tls_cert is not None, self.tls_key is not None, self.tls_ca is not None]
        if any(given) and not all(given):
            raise ValueError("TLS for the federated coordinator needs its certificate, its key and the CA that signed "
                             "it, all three.")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None
