"""Writes a model state between recipe steps to a folder, and reads it back.

A state can be anything the steps make: a transformers model, one whose layers have per-layer widths or
were replaced by factorised pairs (low_rank), torchao's quantized tensors, an ONNX file, a .cpz, an
ExecuTorch program or a compressed-tensors folder. Files are copied as they are. The torch model is saved
with torch.save of the whole module, because no library format holds every one of those modules
(safetensors needs a config that rebuilds the shapes, which low_rank's layers have not). A pickle runs code
when it is loaded, so the worker only hands a checkpoint to the engine after checking its sha256 against
the one recorded in the database when it was stored (workers.tasks.checkpoint_store).

A checkpoint can also be taken inside a step that saves its own progress (llm_quantize, between decoder
layers; workers.engine.checkpoints.within_step): it holds the state before that step, the step's own files
and how far it got, and a new attempt hands those back to the step.

The manifest is written last: a folder without one was cut off and is not a checkpoint.
"""

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from transformers import AutoModelForCausalLM

from workers.engine.checkpoints.settings import CHECKPOINT_FORMAT, MANIFEST_FILE
from workers.engine.energy.schema import StageEnergy
from workers.engine.evaluation.fidelity import OutputStore
from workers.engine.evaluation.step_probe import TaskReference
from workers.engine.report import StepReport
from workers.engine.state import ModelState


class CheckpointError(Exception):
    """The folder is not a checkpoint this job can resume from; the message says why."""


@dataclass(frozen=True)
class InStep:
    """How far step `step` (1-based) got, and the files it saved to go on from there."""

    step: int
    technique: str
    progress: dict
    files: Path


@dataclass(frozen=True)
class PretrainedBase:
    """The state before a step as the transformers folder that step was handed (llm_quantize's input)."""

    task: str
    folder: Path


@dataclass
class Restored:
    state: ModelState | None  # None: the uploaded model, as the engine loads it
    steps_done: int  # the recipe's first steps_done steps are in the state
    attempt: int  # the attempt that saved it
    step_reports: list[StepReport]
    energy_stages: list[StageEnergy]  # every stage booked up to the save, earlier attempts' included
    task_reference: TaskReference | None
    in_step: InStep | None = None  # the next step's own progress, to go on from


def _link_or_copy(source: str, destination: str) -> str:
    """A hard link where both are on one disk (the files are not written twice), else a copy."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
    return destination


def _copy_file(source: Path, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, folder / source.name)
    return f"{folder.name}/{source.name}"


def _copy_onnx(source: Path, folder: Path) -> str:
    """The file and any external data files it names, which sit beside it."""
    relative = _copy_file(source, folder)
    graph = onnx.load(str(source), load_external_data=False).graph
    for initializer in graph.initializer:
        for entry in initializer.external_data:
            if entry.key == "location" and not (folder / entry.value).exists():
                shutil.copy2(source.parent / entry.value, folder / entry.value)
    return relative


# transformers puts forward hooks (closures, which do not pickle) on a model the first time it is asked for
# hidden states, and marks the model so as not to do it twice.
_CAPTURING_HOOKS_MODULE = "transformers.utils.output_capturing"
_CAPTURING_HOOKS_FLAG = "_output_capturing_hooks_installed"


@contextmanager
def _without_capturing_hooks(model: torch.nn.Module) -> Iterator[None]:
    """Takes transformers' output-capturing hooks and their mark off the model while it is saved, and puts
    them back as they were. A model loaded from the save has neither, so transformers installs them again
    when they are next needed."""
    saved_hooks: list[tuple[dict, dict]] = []
    saved_flags: list[tuple[torch.nn.Module, object]] = []
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            if any(getattr(getattr(hook, "func", hook), "__module__", "") == _CAPTURING_HOOKS_MODULE
                   for hook in hooks.values()):
                saved_hooks.append((hooks, dict(hooks)))
                for hook_id, hook in list(hooks.items()):
                    if getattr(getattr(hook, "func", hook), "__module__", "") == _CAPTURING_HOOKS_MODULE:
                        del hooks[hook_id]
        if _CAPTURING_HOOKS_FLAG in module.__dict__:
            saved_flags.append((module, module.__dict__.pop(_CAPTURING_HOOKS_FLAG)))
    try:
        yield
    finally:
        for hooks, original in saved_hooks:
            hooks.clear()
            hooks.update(original)  # in their order
        for module, flag in saved_flags:
            module.__dict__[_CAPTURING_HOOKS_FLAG] = flag


def _save_state(state: ModelState, original_dir: Path, folder: Path) -> dict:
    folder.mkdir(parents=True)
    saved: dict = {"task": state.task, "config_dir": "original", "torch_model": None, "onnx": None,
                   "packed": None, "pte": None, "compressed": None}
    if state.config_dir.resolve() != original_dir.resolve():
        shutil.copytree(state.config_dir, folder / "config")
        saved["config_dir"] = "config"
    if state.compressed_dir is not None:
        shutil.copytree(state.compressed_dir, folder / "compressed")
        saved["compressed"] = "compressed"
        if state.compressed_dir.resolve() == state.config_dir.resolve():
            saved["config_dir"] = "compressed"
    if state.torch_model is not None:
        # The compressed-tensors folder reloads to the same model; anything else is saved whole.
        saved["torch_model"] = "compressed" if state.compressed_dir is not None else "model.pt"
        if state.compressed_dir is not None:
            saved["dtype"] = str(next(state.torch_model.parameters()).dtype).removeprefix("torch.")
        else:
            with _without_capturing_hooks(state.torch_model):
                torch.save(state.torch_model, folder / "model.pt")
    if state.onnx_path is not None:
        saved["onnx"] = _copy_onnx(state.onnx_path, folder / "onnx")
    if state.packed_path is not None:
        saved["packed"] = _copy_file(state.packed_path, folder / "packed")
    if state.pte_path is not None:
        saved["pte"] = _copy_file(state.pte_path, folder / "pte")
    return saved


def _save_pretrained_base(base: PretrainedBase, folder: Path) -> dict:
    shutil.copytree(base.folder, folder / "pretrained", copy_function=_link_or_copy)
    return {"task": base.task, "config_dir": "pretrained", "torch_model": "pretrained", "onnx": None, "packed": None,
            "pte": None, "compressed": None}


def _load_state(saved: dict | None, folder: Path, original_dir: Path, device: str) -> ModelState | None:
    if saved is None:
        return None
    config_dir = original_dir if saved["config_dir"] == "original" else folder / saved["config_dir"]
    torch_model = None
    if saved["torch_model"] in ("compressed", "pretrained"):
        pretrained = folder / (saved["compressed"] if saved["torch_model"] == "compressed" else "pretrained")
        # As the job held it: a compressed state in its recorded dtype (float32 before that was recorded);
        # llm_quantize's written input in float32, as a step before it left the model (a job whose only step
        # is llm_quantize holds the upload's dtype, but its in-step checkpoints point at the upload itself).
        dtype = saved.get("dtype", "float32") if saved["torch_model"] == "compressed" else "float32"
        torch_model = AutoModelForCausalLM.from_pretrained(pretrained, dtype=getattr(torch, dtype))
    elif saved["torch_model"] is not None:
        # The sha256 was checked against the database before this folder reached the engine (module docstring).
        torch_model = torch.load(folder / saved["torch_model"], map_location="cpu", weights_only=False)
    if torch_model is not None:
        torch_model = torch_model.to(device).eval()

    def path(name: str) -> Path | None:
        return None if saved[name] is None else folder / saved[name]

    return ModelState(
        task=saved["task"], config_dir=config_dir, torch_model=torch_model, onnx_path=path("onnx"),
        packed_path=path("packed"), pte_path=path("pte"), compressed_dir=path("compressed"),
    )


def _save_task_reference(reference: TaskReference, folder: Path) -> dict:
    shutil.copytree(reference.outputs.directory, folder / "outputs")
    if reference.predictions is not None:
        np.save(folder / "predictions.npy", reference.predictions)
    return {"task": reference.task, "step": reference.step, "architecture": reference.architecture,
            "label2id": reference.label2id, "num_labels": reference.num_labels, "outputs": reference.outputs.count,
            "predictions": reference.predictions is not None}


def _load_task_reference(saved: dict, folder: Path, reference_dir: Path) -> TaskReference:
    store = OutputStore(reference_dir)
    for index in range(saved["outputs"]):
        store.append(np.load(folder / "outputs" / f"{index:06d}.npy"))
    return TaskReference(
        task=saved["task"], step=saved["step"], architecture=saved["architecture"], label2id=saved["label2id"],
        num_labels=saved["num_labels"], outputs=store,
        predictions=np.load(folder / "predictions.npy") if saved["predictions"] else None,
    )


def _load_in_step(saved: dict | None, folder: Path) -> InStep | None:
    if saved is None:
        return None
    files = folder / saved["files"]
    if not files.is_dir():
        raise CheckpointError(f"its step {saved['step']} files are missing")
    return InStep(step=int(saved["step"]), technique=saved["technique"], progress=dict(saved["progress"]), files=files)


def write_manifest(folder: Path, manifest: dict) -> int:
    """Writes the manifest last, whole or not at all, and returns the checkpoint's size in bytes."""
    partial = folder / f"{MANIFEST_FILE}.partial"
    partial.write_text(json.dumps(manifest), encoding="utf-8")
    partial.replace(folder / MANIFEST_FILE)
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def read_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"no readable {MANIFEST_FILE} in {folder}: {exc}") from exc


def save_checkpoint(
    folder: Path, *, key: str, attempt: int, steps_done: int, state: ModelState | None, original_dir: Path,
    step_reports: list[StepReport], energy_stages: list[StageEnergy], task_reference: TaskReference | None,
    in_step: InStep | None = None, pretrained_base: PretrainedBase | None = None,
) -> int:
    """Writes the checkpoint after the recipe's first `steps_done` steps; returns its size in bytes.

    Inside a step (`in_step`, its files moved in): the state before it is `pretrained_base`, the
    transformers folder the step was handed, or with neither that nor `state`, the uploaded model."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if pretrained_base is not None:
        saved_state = _save_pretrained_base(pretrained_base, folder / "state")
    else:
        saved_state = None if state is None else _save_state(state, original_dir, folder / "state")
    if in_step is not None:
        shutil.move(in_step.files, folder / "in_step")
    manifest = {
        "format": CHECKPOINT_FORMAT, "key": key, "attempt": attempt, "steps_done": steps_done,
        "state": saved_state,
        "in_step": None if in_step is None else {
            "step": in_step.step, "technique": in_step.technique, "progress": in_step.progress, "files": "in_step",
        },
        "step_reports": [report.model_dump(mode="json") for report in step_reports],
        "energy_stages": [stage.model_dump(mode="json") for stage in energy_stages],
        "task_reference": None if task_reference is None
        else _save_task_reference(task_reference, folder / "task_reference"),
    }
    return write_manifest(folder, manifest)


def load_checkpoint(folder: Path, *, key: str, original_dir: Path, device: str, reference_dir: Path) -> Restored:
    """The state and reports a checkpoint holds; CheckpointError when it cannot be used for this job."""
    manifest = read_manifest(folder)
    if manifest.get("format") != CHECKPOINT_FORMAT or manifest.get("key") != key:
        raise CheckpointError(
            f"the checkpoint was made for another recipe, inputs or checkpoint format (key {manifest.get('key')}, "
            f"format {manifest.get('format')}; this job's key is {key}, format {CHECKPOINT_FORMAT})"
        )
    try:
        return Restored(
            state=_load_state(manifest["state"], folder / "state", original_dir, device),
            steps_done=int(manifest["steps_done"]),
            attempt=int(manifest["attempt"]),
            step_reports=[StepReport.model_validate(report) for report in manifest["step_reports"]],
            energy_stages=[StageEnergy.model_validate(stage) for stage in manifest["energy_stages"]],
            task_reference=None if manifest["task_reference"] is None
            else _load_task_reference(manifest["task_reference"], folder / "task_reference", reference_dir),
            in_step=_load_in_step(manifest.get("in_step"), folder),
        )
    except Exception as exc:  # noqa: BLE001 - any failure to rebuild the state means: compute it again
        raise CheckpointError(f"the checkpoint could not be loaded: {type(exc).__name__}: {exc}") from exc
