"""Builds a distillation student from a teacher: fewer layers, a narrower FFN, or an uploaded model
checked against the teacher. Where each architecture keeps its layers is data (LAYOUTS)."""

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase
from transformers.pytorch_utils import Conv1D

from workers.engine.architectures.tasks import Task
from workers.engine.devices import module_device
from workers.engine.errors import EngineUserError
from workers.engine.loading import load_model, load_tokenizer


@dataclass(frozen=True)
class Layout:
    layers: str  # the layer ModuleList, relative to model.base_model
    layers_field: str  # config field that counts the layers
    ffn_in: str  # FFN input projection, relative to a layer
    ffn_act: str  # module whose output is the FFN's activation (one value per neuron)
    ffn_out: str  # FFN output projection, relative to a layer
    ffn_field: str  # config field of the FFN width


_BERT_LIKE = Layout(
    layers="encoder.layer", layers_field="num_hidden_layers", ffn_in="intermediate.dense",
    ffn_act="intermediate", ffn_out="output.dense", ffn_field="intermediate_size",
)
LAYOUTS: dict[str, Layout] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "gpt2": Layout(
        layers="h", layers_field="n_layer", ffn_in="mlp.c_fc", ffn_act="mlp.act", ffn_out="mlp.c_proj",
        ffn_field="n_inner",
    ),
}


def layout_for(model: torch.nn.Module) -> Layout:
    model_type = model.config.model_type
    if model_type not in LAYOUTS:
        raise EngineUserError(
            f"Building a student by layers or width is not supported for model_type {model_type!r} "
            f"(supported: {', '.join(sorted(LAYOUTS))}); upload a student and give student_model_id instead."
        )
    return LAYOUTS[model_type]


def layer_count(model: torch.nn.Module) -> int:
    # transformers maps num_hidden_layers onto each architecture's own field (e.g. GPT-2's n_layer).
    return model.config.num_hidden_layers


def _output_distance(task: Task, reference, result, attention_mask: torch.Tensor) -> float:
    """How far a truncated model's outputs are from the full model's: 1 - pooled cosine for encoders,
    the mean KL of the output distributions otherwise."""
    mask = attention_mask.unsqueeze(-1).to(torch.float32)
    if task == "feature-extraction":
        pooled = [(output.last_hidden_state * mask).sum(1) / mask.sum(1) for output in (reference, result)]
        return 1 - torch.nn.functional.cosine_similarity(*pooled, dim=-1).mean().item()
    log_p = torch.log_softmax(reference.logits, dim=-1)
    kl = (log_p.exp() * (log_p - torch.log_softmax(result.logits, dim=-1))).sum(-1)
    if task == "text-generation":
        return ((kl * attention_mask).sum() / attention_mask.sum()).item()
    return kl.mean().item()


def choose_layers(teacher: torch.nn.Module, task: Task, count: int, batch: dict[str, torch.Tensor]) -> list[int]:
    """`count` teacher layers picked by greedy removal: repeatedly drop the layer whose removal moves
    the outputs on `batch` least. On all-MiniLM-L6-v2 (6 -> 3) this starts the student at a pooled
    cosine of 0.72 ([0, 4, 5]), where every other layer ([0, 2, 4]) starts at 0.39: the last layers
    map onto the output space the pooled embedding lives in."""
    layout = layout_for(teacher)
    parent_path, _, name = layout.layers.rpartition(".")
    parent = teacher.base_model.get_submodule(parent_path) if parent_path else teacher.base_model
    layers = getattr(parent, name)
    kwargs = {"use_cache": False} if task == "text-generation" else {}

    def run(indices: list[int]):
        # The teacher runs with a subset of its own layers swapped in, so no copy is made per candidate.
        setattr(parent, name, torch.nn.ModuleList([layers[index] for index in indices]))
        try:
            return teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
        finally:
            setattr(parent, name, layers)

    kept = list(range(len(layers)))
    with torch.no_grad():
        reference = run(kept)
        while len(kept) > count:
            candidates = [[index for index in kept if index != removed] for removed in kept]
            mask = batch["attention_mask"]
            kept = min(candidates, key=lambda indices: _output_distance(task, reference, run(indices), mask))
    return kept


def check_layer_indices(indices: list[int] | int, teacher_layers: int) -> None:
    """`indices`: a list of layer indices, or a count of layers."""
    count = indices if isinstance(indices, int) else len(indices)
    if count >= teacher_layers:
        raise EngineUserError(
            f"student_layers keeps {count} of the teacher's {teacher_layers} layers; a student needs fewer."
        )
    if isinstance(indices, list) and any(index >= teacher_layers for index in indices):
        raise EngineUserError(
            f"student_layers {indices} names a layer the teacher lacks: it has {teacher_layers} layers, "
            f"numbered 0 to {teacher_layers - 1}."
        )


def block_ends(indices: list[int], teacher_layers: int) -> list[int]:
    """For each kept layer, the last teacher layer of the block it replaces (the layer before the
    next kept one; the teacher's last layer for the last): its output is what the student layer
    is matched to, so the student's last layer aims at the teacher's final output."""
    return [following - 1 for following in [*indices[1:], teacher_layers]]


def fewer_layers(teacher: torch.nn.Module, indices: list[int]) -> torch.nn.Module:
    """A copy of `teacher` keeping only the layers `indices`, with its config updated, so a saved
    student reloads with plain from_pretrained."""
    layout = layout_for(teacher)
    config = teacher.config
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        raise EngineUserError(
            "This GPT-2 scales attention by its layer index, which changes when layers are removed; "
            "use student_width or an uploaded student instead."
        )
    student = copy.deepcopy(teacher)
    layers = student.base_model.get_submodule(layout.layers)
    kept = torch.nn.ModuleList([layers[index] for index in indices])
    parent, _, name = layout.layers.rpartition(".")
    setattr(student.base_model.get_submodule(parent) if parent else student.base_model, name, kept)
    for position, layer in enumerate(kept):
        # Caches are indexed by layer_idx; a kept layer must use its new position.
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = position
    setattr(student.config, layout.layers_field, len(indices))
    return student


def _out_dim(module: torch.nn.Module) -> int:
    """The weight dim that indexes output units: Conv1D stores (in, out), Linear (out, in)."""
    return 1 if isinstance(module, Conv1D) else 0


def ffn_importance(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    """Per layer, each FFN neuron's mean |activation| on the batches times the norm of its output
    weights: roughly how much the layer's output moves when the neuron is removed."""
    layout = layout_for(model)
    layers = model.base_model.get_submodule(layout.layers)
    sums = [None] * len(layers)
    counts = [0] * len(layers)

    def hook(position):
        def record(_module, _inputs, output):
            mask = record.mask.unsqueeze(-1).to(output.dtype)
            total = (output.abs() * mask).sum(dim=(0, 1))
            sums[position] = total if sums[position] is None else sums[position] + total
            counts[position] += int(mask.sum())
        return record

    hooks = [hook(position) for position in range(len(layers))]
    handles = [layer.get_submodule(layout.ffn_act).register_forward_hook(h) for layer, h in zip(layers, hooks)]
    try:
        with torch.no_grad():
            for batch in batches:
                for h in hooks:
                    h.mask = batch["attention_mask"]
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for handle in handles:
            handle.remove()
    scores = []
    for position, layer in enumerate(layers):
        out = layer.get_submodule(layout.ffn_out)
        # A neuron is an input unit of the output projection; its weights run along the output dim.
        norms = out.weight.norm(dim=_out_dim(out))
        scores.append(sums[position] / max(counts[position], 1) * norms)
    return scores


def _slice(module: torch.nn.Module, keep: torch.Tensor, as_input: bool) -> None:
    """Keeps the neurons `keep` of an FFN projection: output units of the input projection, input
    units of the output projection."""
    conv = isinstance(module, Conv1D)
    dim = _out_dim(module) if as_input else 1 - _out_dim(module)
    keep = keep.to(module.weight.device)
    module.weight = torch.nn.Parameter(module.weight.detach().index_select(dim, keep).contiguous())
    if as_input and module.bias is not None:
        module.bias = torch.nn.Parameter(module.bias.detach().index_select(0, keep).contiguous())
    if conv:
        if as_input:
            module.nf = len(keep)
        else:
            module.nx = len(keep)
    elif as_input:
        module.out_features = len(keep)
    else:
        module.in_features = len(keep)


def narrower_ffn(model: torch.nn.Module, width: float, importance: list[torch.Tensor] | None = None) -> int:
    """Keeps round(width · FFN size) neurons in every layer (the most important ones, or the first
    ones without scores), in place; returns the new FFN size. The same size in every layer keeps the
    config valid: transformers has one intermediate_size for all layers."""
    layout = layout_for(model)
    layers = model.base_model.get_submodule(layout.layers)
    first_in = layers[0].get_submodule(layout.ffn_in)
    size = first_in.weight.shape[_out_dim(first_in)]
    kept_size = max(1, round(width * size))
    for position, layer in enumerate(layers):
        if importance is None:
            keep = torch.arange(kept_size, device=first_in.weight.device)
        else:
            # Sorted, so the kept neurons stay in their original order.
            keep = importance[position].topk(kept_size).indices.sort().values
        _slice(layer.get_submodule(layout.ffn_in), keep, as_input=True)
        _slice(layer.get_submodule(layout.ffn_out), keep, as_input=False)
    setattr(model.config, layout.ffn_field, kept_size)
    return kept_size


def load_uploaded_student(
    folder: Path, teacher: torch.nn.Module, task: Task, teacher_tokenizer: PreTrainedTokenizerBase
) -> torch.nn.Module:
    """Loads an uploaded student as the teacher's task, after checking that its outputs can be
    compared with the teacher's: the same vocabulary, and the same hidden size for encoders, the
    same labels for classifiers."""
    if teacher_tokenizer.get_vocab() != load_tokenizer(folder).get_vocab():
        raise EngineUserError(
            "The student's tokenizer vocabulary differs from the teacher's, so the two cannot be fed the same "
            "token ids; upload a student trained with the teacher's tokenizer."
        )
    try:
        student = load_model(folder, task, str(module_device(teacher)))
    except (OSError, ValueError) as exc:
        raise EngineUserError(f"The student folder does not load as a {task} model: {exc}") from exc
    teacher_config, student_config = teacher.config, student.config
    if task == "feature-extraction" and student_config.hidden_size != teacher_config.hidden_size:
        raise EngineUserError(
            f"The student's hidden size is {student_config.hidden_size}, the teacher's {teacher_config.hidden_size}; "
            "an encoder student must produce embeddings of the teacher's size."
        )
    if task == "text-classification" and student_config.num_labels != teacher_config.num_labels:
        raise EngineUserError(
            f"The student has {student_config.num_labels} labels, the teacher {teacher_config.num_labels}; "
            "they must classify into the same labels."
        )
    if task == "text-generation" and student_config.vocab_size != teacher_config.vocab_size:
        raise EngineUserError(
            f"The student's output vocabulary has {student_config.vocab_size} entries, the teacher's "
            f"{teacher_config.vocab_size}; token-level distillation needs the same."
        )
    return student
