"""Models whose layers differ in shape (heads or FFN neurons removed): slicing layers, the per-layer
shapes that describe them, and saving/loading them, which transformers 5 configs cannot express.

Hand-written because transformers 5 dropped `prune_heads` and `config.pruned_heads`, and its configs
hold one `num_attention_heads` and one `intermediate_size` for all layers (see FINDINGS).
"""

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model
from transformers import AutoConfig
from transformers.pytorch_utils import Conv1D

from workers.engine.architectures.structure import LayerStructure, head_dim, layer_structure, transformer_layers
from workers.engine.architectures.task_io import AUTO_CLASS_BY_TASK
from workers.engine.architectures.tasks import Task
from workers.engine.config_folder import PRUNED_SHAPES_FILE
from workers.engine.errors import EngineUserError

WEIGHTS_FILE = "model.safetensors"
SHAPES_FORMAT_VERSION = 1


def _slice_output(module: torch.nn.Module, index: torch.Tensor) -> None:
    """Keeps only the output features in `index` (in the module's own weight layout)."""
    index = index.to(module.weight.device)
    if isinstance(module, Conv1D):
        # Conv1D stores (in, out) and sizes its output with nf.
        module.weight = torch.nn.Parameter(module.weight.data[:, index].contiguous())
        module.nf = int(index.numel())
    else:
        module.weight = torch.nn.Parameter(module.weight.data[index].contiguous())
        module.out_features = int(index.numel())
    if module.bias is not None:
        module.bias = torch.nn.Parameter(module.bias.data[index].contiguous())


def _slice_input(module: torch.nn.Module, index: torch.Tensor) -> None:
    """Keeps only the input features in `index`; the bias belongs to the outputs and stays whole."""
    index = index.to(module.weight.device)
    if isinstance(module, Conv1D):
        module.weight = torch.nn.Parameter(module.weight.data[index].contiguous())
        module.nx = int(index.numel())
    else:
        module.weight = torch.nn.Parameter(module.weight.data[:, index].contiguous())
        module.in_features = int(index.numel())


def as_out_in(module: torch.nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """A view of `tensor` (laid out like the module's weight) as (out_features, in_features)."""
    # Conv1D computes x @ W, so it stores W as (in, out): the transpose of a Linear's.
    return tensor.T if isinstance(module, Conv1D) else tensor


def out_features(module: torch.nn.Module) -> int:
    return module.nf if isinstance(module, Conv1D) else module.out_features


def in_features(module: torch.nn.Module) -> int:
    return module.nx if isinstance(module, Conv1D) else module.in_features


def head_count(layer: torch.nn.Module, structure: LayerStructure) -> int:
    return int(getattr(layer.get_submodule(structure.attention), structure.head_count_attr))


def neuron_count(layer: torch.nn.Module, structure: LayerStructure) -> int:
    return out_features(layer.get_submodule(structure.ffn_in))


def keep_heads(layer: torch.nn.Module, structure: LayerStructure, width: int, heads: list[int]) -> None:
    """Keeps the attention heads `heads` (indices into the layer's current heads) of width `width`."""
    if not heads:
        raise ValueError("a layer must keep at least one attention head")
    columns = torch.cat([torch.arange(h * width, (h + 1) * width) for h in sorted(heads)])
    if structure.qkv is not None:
        # Packed [q | k | v]: the same head columns in each third.
        packed_width = head_count(layer, structure) * width
        packed = torch.cat([columns + part * packed_width for part in range(3)])
        _slice_output(layer.get_submodule(structure.qkv), packed)
    else:
        for path in structure.qkv_modules:
            _slice_output(layer.get_submodule(path), columns)
    _slice_input(layer.get_submodule(structure.attention_out), columns)
    attention = layer.get_submodule(structure.attention)
    setattr(attention, structure.head_count_attr, len(heads))
    for attr in structure.head_width_attrs:
        setattr(attention, attr, len(heads) * width)


def keep_neurons(layer: torch.nn.Module, structure: LayerStructure, neurons: list[int]) -> None:
    if not neurons:
        raise ValueError("a layer must keep at least one FFN neuron")
    index = torch.tensor(sorted(neurons), dtype=torch.long)
    _slice_output(layer.get_submodule(structure.ffn_in), index)
    _slice_input(layer.get_submodule(structure.ffn_out), index)


def layer_shapes(model: torch.nn.Module) -> dict[str, Any]:
    """The per-layer head and neuron counts: the content of pruned_shapes.json."""
    structure = layer_structure(model)
    return {
        "format_version": SHAPES_FORMAT_VERSION,
        "model_type": model.config.model_type,
        "layers": [
            {"attention_heads": head_count(layer, structure), "ffn_neurons": neuron_count(layer, structure)}
            for _, layer in transformer_layers(model)
        ],
    }


def config_describes(model: torch.nn.Module) -> bool:
    """Whether plain `from_pretrained` on the model's config builds these exact shapes."""
    shapes = layer_shapes(model)["layers"]
    config = model.config
    intermediate = getattr(config, layer_structure(model).intermediate_size_attr, None) or 4 * config.hidden_size
    return all(
        layer["attention_heads"] == config.num_attention_heads and layer["ffn_neurons"] == intermediate
        for layer in shapes
    )


def apply_layer_shapes(model: torch.nn.Module, shapes: dict[str, Any]) -> None:
    """Slices a freshly built model to `shapes` (keeping the first heads and neurons: the weights
    loaded next overwrite them all)."""
    if shapes.get("format_version") != SHAPES_FORMAT_VERSION:
        raise EngineUserError(
            f"{PRUNED_SHAPES_FILE} has format_version {shapes.get('format_version')!r}; this compresso reads "
            f"version {SHAPES_FORMAT_VERSION}. Re-run the prune step with this version."
        )
    structure = layer_structure(model)
    layers = transformer_layers(model)
    if len(shapes["layers"]) != len(layers):
        raise EngineUserError(
            f"{PRUNED_SHAPES_FILE} describes {len(shapes['layers'])} layers but config.json builds {len(layers)}."
        )
    width = head_dim(model)
    with torch.no_grad():
        for (_, layer), shape in zip(layers, shapes["layers"], strict=True):
            if shape["attention_heads"] != head_count(layer, structure):
                keep_heads(layer, structure, width, list(range(shape["attention_heads"])))
            if shape["ffn_neurons"] != neuron_count(layer, structure):
                keep_neurons(layer, structure, list(range(shape["ffn_neurons"])))


def save_pruned_model(model: torch.nn.Module, folder: Path) -> Path:
    """Writes model.safetensors, config.json and pruned_shapes.json to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    # save_model (not save_file) drops the duplicate names of tied tensors, e.g. GPT-2's lm_head.
    save_safetensors_model(model, str(folder / WEIGHTS_FILE))
    model.config.save_pretrained(folder)
    (folder / PRUNED_SHAPES_FILE).write_text(
        json.dumps(layer_shapes(model), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return folder


def load_pruned_model(folder: Path, task: Task) -> torch.nn.Module:
    """Builds the model from config.json, slices its layers to pruned_shapes.json, then loads the
    weights strictly, so any mismatch between shapes and weights fails loudly."""
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    model = AUTO_CLASS_BY_TASK[task].from_config(config, trust_remote_code=False)
    shapes_path = folder / PRUNED_SHAPES_FILE
    if shapes_path.is_file():
        apply_layer_shapes(model, json.loads(shapes_path.read_text(encoding="utf-8")))
    load_safetensors_model(model, str(folder / WEIGHTS_FILE), strict=True)
    return model.eval()
