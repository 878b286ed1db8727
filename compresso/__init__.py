"""compresso's Python SDK: upload models and datasets, submit and follow compression jobs, fetch results.

    from compresso import Client

    with Client("http://127.0.0.1:8000") as client:
        model = client.upload_model("my-model/")
        job = client.wait(client.submit(model.id, "recipe.yaml").id)
        client.download(job.id, "model.zip")

Only httpx, pyyaml and tqdm are needed: nothing of the server (app, workers, torch) is imported.
"""

from compresso.client import Client
from compresso.errors import (
    ChecksumMismatch,
    CompressoError,
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    JobFailed,
    NotFound,
    Unauthorized,
    WaitTimeout,
)
from compresso.resources import Artifact, Dataset, Job, Model, Site, StepProgress

__all__ = [
    "Artifact",
    "ChecksumMismatch",
    "Client",
    "CompressoError",
    "Conflict",
    "ConnectionFailed",
    "Dataset",
    "InvalidRequest",
    "Job",
    "JobFailed",
    "Model",
    "NotFound",
    "Site",
    "StepProgress",
    "Unauthorized",
    "WaitTimeout",
]
