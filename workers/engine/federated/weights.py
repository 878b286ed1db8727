"""The model's weights as the federated step exchanges them: the floating-point tensors travel as
Flower's list of arrays (the ones averaged), in a fixed order of names; everything else a site needs
to rebuild the same model (its config files and integer buffers) travels once per round in the
instructions. Used by the engine (main venv) and by the site client (Flower's venv)."""

import json
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load as load_arrays_bytes
from safetensors.numpy import save as save_arrays_bytes
from safetensors.numpy import save_file as save_arrays_file

from workers.engine.architectures.tasks import Task
from workers.engine.loading import load_model
from workers.engine.model_files import CONFIG_FILES

WEIGHTS_FILE = "model.safetensors"
# A weight matrix with more exact zeros than this was pruned: sites keep those zeros (as recovery does).
PRUNED_ZERO_FRACTION = 0.25


def split_state(model: torch.nn.Module) -> tuple[list[str], list[np.ndarray], dict[str, np.ndarray]]:
    """(names, arrays) of the floating-point tensors, and the other tensors by name; a tensor tied to an
    earlier one (GPT-2's lm_head and embeddings) is left out, as save_pretrained does."""
    names, arrays, fixed, seen = [], [], {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        if tensor.is_floating_point():
            names.append(name)
            arrays.append(tensor.detach().to("cpu", torch.float32).numpy().copy())
        else:
            fixed[name] = tensor.detach().cpu().numpy().copy()
    return names, arrays, fixed


def pruned_names(model: torch.nn.Module, names: list[str], arrays: list[np.ndarray]) -> list[str]:
    """The weight matrices that earlier steps pruned (many exact zeros): sites train them under masks."""
    parameters = {name for name, _ in model.named_parameters()}
    return [
        name for name, array in zip(names, arrays)
        if name in parameters and array.ndim >= 2 and float((array == 0).mean()) > PRUNED_ZERO_FRACTION
    ]


def model_description(config_dir: Path, fixed: dict[str, np.ndarray]) -> dict[str, str | bytes]:
    """What a site needs besides the arrays to rebuild the model: its config files and other tensors."""
    files = {name: (config_dir / name).read_text(encoding="utf-8") for name in CONFIG_FILES if (config_dir / name).is_file()}
    return {
        "config_files": json.dumps(files),
        "fixed_tensors": zlib.compress(save_arrays_bytes(fixed)) if fixed else b"",
    }


def build_model(
    folder: Path, description: dict, names: list[str], arrays: list[np.ndarray], task: Task, device: str
) -> torch.nn.Module:
    """Writes the model folder the arrays and description make, and loads it as the engine loads any model."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in json.loads(description["config_files"]).items():
        (folder / name).write_text(text, encoding="utf-8")
    tensors = load_arrays_bytes(zlib.decompress(description["fixed_tensors"])) if description["fixed_tensors"] else {}
    if len(names) != len(arrays):
        raise ValueError(f"{len(arrays)} arrays for {len(names)} names")
    tensors.update(zip(names, arrays))
    save_arrays_file(tensors, str(folder / WEIGHTS_FILE))
    return load_model(folder, task, device)


def state_arrays(model: torch.nn.Module, names: list[str]) -> list[np.ndarray]:
    state = model.state_dict()
    return [state[name].detach().to("cpu", torch.float32).numpy() for name in names]


def load_arrays(model: torch.nn.Module, names: list[str], arrays: list[np.ndarray]) -> None:
    """Copies the averaged arrays into the model's own tensors, in place."""
    state = model.state_dict()
    with torch.no_grad():
        for name, array in zip(names, arrays, strict=True):
            state[name].copy_(torch.from_numpy(np.asarray(array)).to(state[name].dtype))

