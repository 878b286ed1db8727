"""Writes the folder that describes a model after a step changed its architecture: the model's
current config.json next to copies of the tokenizer and generation files of the folder it came from.

Structural steps (fewer layers, fewer FFN neurons, removed heads) call this and point
`ModelState.config_dir` at the result, so packaging and later steps see the new shapes.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from workers.engine.model_files import CONFIG_FILES, TOKENIZER_FILES

# Per-layer shapes that a transformers config cannot express (see FINDINGS: transformers 5 has one
# num_attention_heads and one intermediate_size for all layers); compresso's own loader reads it.
PRUNED_SHAPES_FILE = "pruned_shapes.json"


def derive_config_dir(
    model: torch.nn.Module, source_dir: Path, dest_dir: Path, pruned_shapes: dict[str, Any] | None = None
) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    for name in (*TOKENIZER_FILES, *CONFIG_FILES):
        if (source_dir / name).is_file() and name != "config.json":
            shutil.copyfile(source_dir / name, dest_dir / name)
    model.config.save_pretrained(dest_dir)
    shapes_path = dest_dir / PRUNED_SHAPES_FILE
    if pruned_shapes is not None:
        shapes_path.write_text(json.dumps(pruned_shapes, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    elif (source_dir / PRUNED_SHAPES_FILE).is_file():
        # Earlier per-layer shapes still describe the model unless this step replaced them.
        shutil.copyfile(source_dir / PRUNED_SHAPES_FILE, shapes_path)
    return dest_dir
