"""Ships a torch result as transformers weights (model.safetensors) next to the ONNX file, when
the architecture still allows one: plain `from_pretrained` must rebuild exactly these shapes from
config.json, or, for per-layer shapes (pruned heads or neurons), compresso's own loader from
pruned_shapes.json. Layers replaced by other modules (low_rank's factorised pairs) have no
transformers form, so those results ship ONNX only.
"""

import logging
import shutil
from pathlib import Path

import torch

from workers.engine.architectures.task_io import AUTO_CLASS_BY_TASK
from workers.engine.architectures.tasks import Task
from workers.engine.config_folder import PRUNED_SHAPES_FILE

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def rebuilds_from_config(model: torch.nn.Module, task: Task) -> bool:
    """Whether transformers builds a model with exactly these tensor names and shapes from the config."""
    with torch.device("meta"):
        blank = AUTO_CLASS_BY_TASK[task].from_config(model.config)
    return _shapes(blank) == _shapes(model)


def save_transformers_weights(model: torch.nn.Module, task: Task, config_dir: Path, dest_dir: Path) -> Path | None:
    """Writes dest_dir/model.safetensors (and pruned_shapes.json where needed), or returns None
    when no loader could rebuild the model."""
    per_layer_shapes = (config_dir / PRUNED_SHAPES_FILE).is_file()
    if not per_layer_shapes and not rebuilds_from_config(model, task):
        logger.info("the result's layers have no transformers form (e.g. factorised layers): shipping ONNX only")
        return None
    scratch = dest_dir / ".transformers"
    shutil.rmtree(scratch, ignore_errors=True)
    # save_pretrained handles tied weights (GPT-2's LM head) and writes safetensors.
    model.save_pretrained(scratch, safe_serialization=True)
    weights = scratch / WEIGHTS_FILE
    if not weights.is_file():
        raise RuntimeError(f"save_pretrained wrote no {WEIGHTS_FILE} (sharded?); refusing to ship a partial folder.")
    target = dest_dir / WEIGHTS_FILE
    weights.replace(target)
    # The model's own config is the truth for these weights (a step may have changed its shapes).
    (scratch / "config.json").replace(dest_dir / "config.json")
    shutil.rmtree(scratch, ignore_errors=True)
    return target
