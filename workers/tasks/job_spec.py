"""What the worker hands the engine for one attempt of a job: the spec file's contents, the worker's energy
and footprint settings, and the key that says which stored checkpoints fit the job."""

from pathlib import Path

from app.config import Settings
from app.core.storage import Storage
from workers.engine.checkpoints.settings import checkpoint_key
from workers.hardware import hardware_footprint
from workers.tasks.checkpoint_store import ResumePoint


def energy_settings(settings: Settings, deployment: dict) -> dict:
    """The worker's own grid (its settings) and the job's deployment grid and rate."""
    return {
        "country": settings.carbon_country,
        "pue": settings.pue,
        "cpu_watts_per_core": settings.cpu_watts_per_core,
        "gpu_idle_watts": settings.gpu_idle_watts,
        "gpu_idle_source": (settings.gpu_idle_source or "COMPRESSO_GPU_IDLE_WATTS")
        if settings.gpu_idle_watts is not None else None,
        "deployment_country": deployment.get("country"),
        "requests_per_day": deployment.get("requests_per_day"),
    }


def footprint_settings(settings: Settings, deployment: dict) -> dict:
    """The WUE of the worker's data centre and of the deployment, and the worker's hardware footprint."""
    footprint, error = hardware_footprint(settings)
    deployment_wue = deployment.get("wue_l_per_kwh")
    return {
        "wue_l_per_kwh": settings.wue_l_per_kwh,
        # The default's own source (FootprintSettings) stands unless the operator set the figure.
        **({"wue_source": "COMPRESSO_WUE_L_PER_KWH"} if "wue_l_per_kwh" in settings.model_fields_set else {}),
        "deployment_wue_l_per_kwh": deployment_wue,
        "deployment_wue_source": None if deployment_wue is None else "the job's deployment.wue_l_per_kwh",
        "hardware": footprint.model_dump() if footprint else None,
        "hardware_error": error,
    }


def job_checkpoint_key(claim: dict) -> str:
    """The checkpoint key of a claimed job (workers.engine.checkpoints.settings): of its recipe, or of the goal
    a goal job searches for."""
    inputs = {
        "model": claim["model_key"], "dataset": claim["dataset_sha256"], "models": claim["referenced_model_keys"],
        "site_datasets": {dataset_id: entry["sha256"] for dataset_id, entry in claim["site_datasets"].items()},
    }
    what = claim["recipe"] if claim["goal"] is None else {"goal": claim["goal"]}
    return checkpoint_key(what, claim["device"], claim["target"], claim["evaluation"], inputs)


def engine_spec(
    claim: dict, settings: Settings, storage: Storage, work_dir: Path, key: str, resume: ResumePoint | None
) -> dict:
    return {
        # Local copies: the stored folders themselves on a shared directory, a cached download from a bucket.
        "model_dir": str(storage.local_copy(claim["model_key"])),
        "model_paths": {
            model_id: str(storage.local_copy(key))
            for model_id, key in claim["referenced_model_keys"].items()
            if storage.exists(key)
        },
        # A goal job searches for its recipe; the engine takes one or the other.
        **({"goal": claim["goal"]} if claim["goal"] is not None else {"recipe": claim["recipe"]}),
        "dataset_path": str(storage.local_copy(claim["dataset_key"])) if claim["dataset_key"] else None,
        "device": claim["device"],
        "target": claim["target"],
        "eval": claim["evaluation"],
        "energy": energy_settings(settings, claim["deployment"]),
        "footprint": footprint_settings(settings, claim["deployment"]),
        "llm_python": str(settings.llm_python) if settings.llm_python else None,
        "federation": {
            "python": str(settings.federated_python) if settings.federated_python else None,
            "bind_host": settings.federated_bind_host,
            "advertise_host": settings.federated_advertise_host,
            **({"tls_cert": str(settings.federated_tls_cert), "tls_key": str(settings.federated_tls_key),
                "tls_ca": str(settings.federated_tls_ca)} if settings.federated_tls_cert else {}),
        },
        "dataset_sha256": claim["dataset_sha256"],
        "work_dir": str(work_dir / "scratch"),
        "output_dir": str(work_dir / "output"),
        # After each recipe step, or each candidate of a goal's search.
        "checkpoints": {
            "key": key, "attempt": claim["attempt"], "save_dir": str(work_dir / "checkpoints"),
            "resume_dir": None if resume is None else str(resume.folder),
            "within_step_interval_s": settings.layer_checkpoint_minutes * 60,
        },
    }
