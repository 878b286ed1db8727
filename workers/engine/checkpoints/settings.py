"""What the worker tells the engine about checkpoints, and the key that says whether a checkpoint made by
one attempt is valid for another. A light module (no torch): the worker computes the key too."""

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Part of every key: a checkpoint written by an engine that saves states differently is never resumed.
CHECKPOINT_FORMAT = 1
# Written last into a checkpoint's folder: one without it was cut off.
MANIFEST_FILE = "manifest.json"


def progress_text(progress: dict) -> str:
    """How far a step got inside itself ({"pass": 2, "passes": 2, "layers_done": 5, "layers": 33}), in words:
    "pass 2 of 2, layer 5 of 33"."""
    layers = f"layer {progress.get('layers_done')} of {progress.get('layers')}"
    return layers if progress.get("passes", 1) == 1 else f"pass {progress.get('pass')} of {progress['passes']}, {layers}"


def checkpoint_key(
    recipe: dict[str, Any], device: str, target: dict[str, Any] | None, evaluation: dict[str, Any] | None,
    inputs: dict[str, Any],
) -> str:
    """The sha256 of everything that decides what a job's steps compute: its recipe, where it runs, the
    evaluation settings (they choose the calibration rows) and its inputs (model, dataset and the other
    models it names, by storage key or hash). Two attempts of one job share it; a job whose recipe was
    changed would not."""
    canonical = json.dumps(
        {"format": CHECKPOINT_FORMAT, "recipe": recipe, "device": device, "target": target or {},
         "evaluation": evaluation or {}, "inputs": inputs},
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CheckpointSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern="^[0-9a-f]{64}$", description="checkpoint_key of the job; written into every checkpoint.")
    attempt: int = Field(ge=1, description="This attempt's number, written into its checkpoints.")
    save_dir: Path | None = Field(
        None, description="Where each step's checkpoint folder is written (the caller stores and removes it); "
        "None: none are written."
    )
    resume_dir: Path | None = Field(
        None, description="A checkpoint folder (checked by the caller) to resume from: its steps are not run again."
    )
    within_step_interval_s: float = Field(
        600.0, ge=0, description="Inside a step that can go on part-way (llm_quantize, between decoder layers): the "
        "least time between two checkpoints. 0: after every layer."
    )
