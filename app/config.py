"""Typed settings for the API and the workers, read from the environment (prefix COMPRESSO_).

Nested groups use a double underscore: COMPRESSO_LIMITS__UPLOAD_MAX_BYTES=1000000.
"""

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.engine.footprint.settings import DEFAULT_WUE_L_PER_KWH

GiB = 1024**3


class Limits(BaseModel):
    """Upload limits. Every one is enforced while streaming, never trusted from a header."""

    upload_max_bytes: int = Field(10 * GiB, gt=0, description="Largest model archive accepted, in bytes.")
    extracted_max_bytes: int = Field(20 * GiB, gt=0, description="Largest total size of an extracted archive.")
    archive_max_files: int = Field(10_000, gt=0, description="Most entries an archive may hold.")
    dataset_max_bytes: int = Field(1 * GiB, gt=0, description="Largest dataset file accepted, in bytes.")
    tenant_concurrent_jobs: int = Field(
        4, gt=0, description="Queued plus running jobs a tenant may have; past it, a submit gets 429."
    )
    tenant_storage_bytes: int = Field(
        200 * GiB, gt=0, description="Bytes of models, datasets and job artifacts a tenant may store; past it, 413."
    )


class TimeLimitSettings(BaseModel):
    """How long a job may run. Past the soft limit the engine is asked to stop (SIGTERM) and the job
    ends `timed_out`; one that has not stopped by the hard limit is killed (SIGKILL)."""

    soft_seconds: float = Field(6 * 3600, gt=0, description="Default soft limit of a whole job.")
    hard_seconds: float = Field(6 * 3600 + 600, gt=0, description="Default hard limit of a whole job.")
    grace_seconds: float = Field(
        60, gt=0, description="After a step's own soft limit (time_limit_seconds), how long before the kill."
    )
    per_technique: dict[str, float] = Field(
        default_factory=dict,
        description='Default soft limit of one step, by technique (e.g. {"distill": 7200}); a step\'s '
        "time_limit_seconds overrides it.",
    )


class WebhookSettings(BaseModel):
    """Delivery of job events to the job's webhook_url."""

    max_attempts: int = Field(8, ge=1, le=50, description="Tries per event before its delivery is marked failed.")
    retry_base_seconds: float = Field(
        10, gt=0, description="Wait before the 2nd try; it doubles after each failure, up to one hour."
    )
    timeout_seconds: float = Field(10, gt=0, le=120, description="How long one try waits for the receiver.")
    allow_private: bool | None = Field(
        None,
        description="Allow webhook URLs on private, loopback or link-local addresses. Empty: allowed only while "
        "authentication is off (a single user on their own machine).",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COMPRESSO_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Holds the SQLite files and artifacts of the embedded default.")
    database_url: str = Field("", description="SQLAlchemy URL. Empty: a SQLite file under data_dir.")
    broker_url: str = Field("", description="Celery broker URL. Empty: kombu's SQLAlchemy transport on SQLite.")
    storage_dir: Path | None = Field(None, description="Artifact directory. Empty: data_dir/storage.")
    storage_url: str | None = Field(
        None, pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$",
        description="s3://bucket/prefix: keep models, datasets and artifacts in an S3-compatible bucket instead of "
        "storage_dir (credentials and region from the usual AWS_* variables). Empty: the local directory.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="The S3 API's address for MinIO, Ceph RGW, R2 or another S3-compatible store. Empty: AWS."
    )
    storage_presign: bool = Field(
        False, description="Downloads answer 307 to a presigned bucket URL instead of streaming through the API."
    )
    storage_presign_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600, description="How long a presigned URL works.")
    storage_cache_bytes: int = Field(
        20 * GiB, gt=0,
        description="With a bucket: how much of it each host keeps in its local cache (data_dir/object-storage), "
        "least recently used out first. Hold the models of the jobs that run at once.",
    )
    auto_device: Literal["cpu", "cuda"] = Field(
        "cpu", description='Where a job asking for device "auto" runs; set "cuda" where GPU workers exist.'
    )
    gpu_enabled: bool = Field(
        True, description="Whether jobs may ask for cuda. `compresso serve` sets it from the machine it runs on."
    )
    host: str = Field("127.0.0.1", description="Address the API listens on; anything but loopback turns auth on.")
    auth_required: bool = Field(
        False, description="Require an API key even on loopback. Off a loopback address it is always required."
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="When set, GET /metrics answers only `Authorization: Bearer <this token>` (Prometheus: the "
        "scrape job's `authorization: {credentials: ...}`). Empty: /metrics is open, like /healthz; it serves "
        "aggregates across all tenants (job counts, durations, energy), never one tenant's data.",
    )
    port: int = Field(8000, ge=1, le=65535)
    access_log: bool = Field(
        True,
        description="Log one line per HTTP request (uvicorn's access log). Writing them took about a third of "
        "the event loop's busy time of an API serving 150 status requests/s; turn it off on a busy server "
        "whose proxy logs requests already.",
    )
    api_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="API processes serving requests (uvicorn workers). One process uses at most one core; "
        "give a busy server one per core.",
    )
    cancel_poll_seconds: float = Field(1.0, gt=0, description="How often a running job checks for cancellation.")
    heartbeat_stale_seconds: float = Field(
        60, gt=0, description="A running job whose worker has been silent this long is requeued by the reconciler."
    )
    reconcile_seconds: float = Field(15, gt=0, description="How often each worker runs the reconciler.")
    reconcile_grace_seconds: float = Field(
        30, gt=0, description="How old a queued job must be before the reconciler (re)sends its message."
    )
    orphan_idle_seconds: float = Field(
        600, ge=0, description="At API start, scratch and stored files idle this long without a row are removed."
    )
    database_pool_size: int = Field(
        5, ge=1, le=1000, description="Database connections each API or worker process keeps open (SQLAlchemy's pool)."
    )
    database_max_overflow: int = Field(
        10, ge=0, le=1000, description="Connections a process may open beyond the pool size at busy times."
    )
    database_pool_timeout_seconds: float = Field(
        30,
        gt=0,
        le=600,
        description="How long a request waits for a free database connection before it is answered 503 with Retry-After.",
    )
    database_retry_seconds: float = Field(
        300, gt=0, description="How long a worker keeps retrying a job's final status write while the database is down."
    )
    max_attempts: int = Field(3, ge=1, description="Runs a job gets before a lost worker makes it fail.")
    layer_checkpoint_minutes: float = Field(
        10, ge=0, description="Inside an llm_quantize step, the least time between two checkpoints between decoder "
        "layers, which a new attempt goes on from (0: after every layer). Each holds the layers done and the "
        "calibration activations, so a short interval costs disk and upload time on a large model.",
    )
    engine_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU niceness of the engine process: on a machine shared with the API, a job yields the CPU "
        "to requests, so status polls stay fast while it runs (0: same priority as the API).",
    )
    limits: Limits = Limits()
    time_limits: TimeLimitSettings = TimeLimitSettings()
    webhooks: WebhookSettings = WebhookSettings()
    mlflow_tracking_uri: str | None = Field(
        None,
        description="Every finished job logs an MLflow run here (e.g. http://mlflow:5000 or sqlite:///mlflow.db); "
        "a job may name its own http(s) tracking server instead.",
    )
    mlflow_experiment: str = Field("compresso", description="The MLflow experiment of jobs that do not name one.")
    carbon_country: str | None = Field(
        None,
        pattern="^[A-Z]{3}$",
        description="ISO 3166 alpha-3 code of the workers' grid (e.g. FRA). Empty: the world average.",
    )
    pue: float = Field(1.0, ge=1.0, le=3.0, description="Power usage effectiveness of the workers' data centre.")
    cpu_watts_per_core: float | None = Field(
        None, gt=0, le=1000, description="Overrides CodeCarbon's per-core CPU power figure where no RAPL exists."
    )
    worker_heartbeat_seconds: float = Field(
        15.0, gt=0, description="How often each worker node records that it is alive (worker_nodes), for routing."
    )
    gpu_idle_watts: float | None = Field(
        None, ge=0, le=100_000,
        description="The idle power of a gpu worker's GPU, which splits each job's GPU energy into active and idle. "
        "Empty: the worker reads it through NVML at start.",
    )
    gpu_idle_source: str | None = Field(None, description="How gpu_idle_watts was obtained (set with it).")
    wue_l_per_kwh: float = Field(
        DEFAULT_WUE_L_PER_KWH, ge=0, le=100,
        description="On-site water of the workers' data centre per kWh of IT energy (Water Usage Effectiveness); 0 "
        "where cooling uses no water. Default: the US data-centre average of Shehabi et al. (2016), LBNL-1005775.",
    )
    hardware_lifetime_years: float | None = Field(
        None, gt=0, le=30,
        description="Years the workers' hardware serves, over which its manufacture is amortised. Empty: Boavizta's "
        "default server lifetime (4 years).",
    )
    cpu_model: str | None = Field(
        None, max_length=200,
        description="The workers' CPU model for the embodied impact (e.g. 'AMD EPYC 7763'), where CodeCarbon's "
        "detection is vague. Empty: CodeCarbon's detection, which Boavizta fuzzy-matches.",
    )
    boavizta_python: Path | None = Field(
        None,
        description="Python of the isolated environment that has boaviztapi (it pins older fastapi and pandas). "
        "Empty: .venv-boavizta beside the running venv, which `make install` builds.",
    )
    llm_python: Path | None = Field(
        None,
        description="Python of the isolated environment that has llm-compressor, for llm_quantize steps (it pins "
        "older transformers and compressed-tensors). Empty: .venv-llm beside the running venv, which `make install` "
        "builds.",
    )
    federated_python: Path | None = Field(
        None,
        description="Python of the isolated environment that has Flower, for federated steps and site workers (it pins "
        "older fastapi, starlette and protobuf). Empty: .venv-federated beside the running venv, which `make install` "
        "builds.",
    )
    federated_bind_host: str = Field(
        "127.0.0.1",
        description="Where a worker running a federated step listens for its sites' Flower clients (a free port is "
        "picked per step). 0.0.0.0 when sites run on other hosts.",
    )
    federated_advertise_host: str | None = Field(
        None,
        description="The host name or address that site workers connect to, when it differs from "
        "COMPRESSO_FEDERATED_BIND_HOST (e.g. bound on 0.0.0.0, reached as coordinator.internal).",
    )
    federated_tls_cert: FilePath | None = Field(
        None,
        description="On a worker that runs federated steps: the PEM certificate its coordinator presents, with "
        "COMPRESSO_FEDERATED_TLS_KEY and COMPRESSO_FEDERATED_TLS_CA; the sites then connect over TLS. Its names must "
        "include the advertised host. Empty: plain gRPC.",
    )
    federated_tls_key: FilePath | None = Field(None, description="The private key of COMPRESSO_FEDERATED_TLS_CERT (PEM).")
    federated_tls_ca: FilePath | None = Field(
        None,
        description="The PEM certificate of the authority that signed the coordinator's certificate. A coordinator's "
        "worker needs it beside the certificate; a site's worker trusts it (empty there: the system's roots).",
    )
    federated_require_tls: bool = Field(
        False,
        description="On a site's worker: take no part in a federated run whose coordinator has no TLS, where the "
        "site's weights and the run's token would cross the network in clear.",
    )
    site_data_dir: Path | None = Field(
        None,
        description="On a site's host: where the site's datasets are kept (compresso site add-dataset writes them, "
        "the site worker reads them); they are never copied to the central storage. Empty: data_dir/sites.",
    )

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("carbon_country", mode="before")
    @classmethod
    def _country_code(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().upper()
            return value or None
        return value

    @model_validator(mode="after")
    def _federated_tls_together(self) -> "Settings":
        if (self.federated_tls_cert is None) != (self.federated_tls_key is None):
            raise ValueError("COMPRESSO_FEDERATED_TLS_CERT and COMPRESSO_FEDERATED_TLS_KEY go together: set both, or neither.")
        if self.federated_tls_cert is not None and self.federated_tls_ca is None:
            raise ValueError("COMPRESSO_FEDERATED_TLS_CERT needs COMPRESSO_FEDERATED_TLS_CA, the PEM of the authority "
                             "that signed it (Flower's server sends it with the certificate).")
        return self

    @model_validator(mode="after")
    def _fill_defaults(self) -> "Settings":
        self.data_dir = self.data_dir.resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'compresso.db'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{self.data_dir / 'broker.db'}"
        if self.storage_dir is None:
            self.storage_dir = self.data_dir / "storage"
        if self.site_data_dir is None:
            self.site_data_dir = self.data_dir / "sites"
        self.storage_dir = self.storage_dir.resolve()
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def auth_enabled(self) -> bool:
        return self.auth_required or not is_loopback(self.host)

    @property
    def webhooks_allow_private(self) -> bool:
        allowed = self.webhooks.allow_private
        return not self.auth_enabled if allowed is None else allowed


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


@lru_cache
def get_settings() -> Settings:
    return Settings()
