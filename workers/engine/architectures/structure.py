"""Where each transformer layer keeps its attention and FFN projections, per model_type, as data, so
structural code (head and neuron pruning, the pruned-model loader) never branches on architecture.
"""

from dataclasses import dataclass

import torch

from workers.engine.errors import EngineUserError


@dataclass(frozen=True)
class LayerStructure:
    """Module paths are relative to one layer (block); `layers` is relative to `model.base_model`.

    Attention projections are either separate (`query`, `key`, `value`) or one packed module
    (`qkv`, outputs laid out [q | k | v], as GPT-2's c_attn). Linear and Conv1D are both allowed:
    code finds the weight layout from the module's type.
    """

    layers: str
    attention: str  # the module whose forward reads the head-count attributes below
    attention_out: str
    ffn_in: str
    ffn_out: str
    head_count_attr: str  # number of heads, kept in step with the sliced projections
    head_width_attrs: tuple[str, ...]  # attributes holding heads * head_dim (e.g. the q/k/v split size)
    intermediate_size_attr: str  # the config field holding the FFN width of every layer
    query: str | None = None
    key: str | None = None
    value: str | None = None
    qkv: str | None = None

    @property
    def qkv_modules(self) -> tuple[str, ...]:
        return (self.qkv,) if self.qkv is not None else tuple(p for p in (self.query, self.key, self.value) if p)


# BERT and the encoders that copied its module layout (checked by tests on BERT, by hand on RoBERTa).
_BERT_LIKE = LayerStructure(
    layers="encoder.layer",
    attention="attention.self",
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
    attention_out="attention.output.dense",
    ffn_in="intermediate.dense",
    ffn_out="output.dense",
    head_count_attr="num_attention_heads",
    head_width_attrs=("all_head_size",),
    intermediate_size_attr="intermediate_size",
)

STRUCTURE_BY_MODEL_TYPE: dict[str, LayerStructure] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "gpt2": LayerStructure(
        layers="h",
        attention="attn",
        qkv="attn.c_attn",
        attention_out="attn.c_proj",
        ffn_in="mlp.c_fc",
        ffn_out="mlp.c_proj",
        head_count_attr="num_heads",
        # GPT2Attention splits c_attn's output with split_size, so it must follow the kept width.
        head_width_attrs=("split_size",),
        # n_inner may be None (meaning 4 * n_embd); setting it to the kept width is always valid.
        intermediate_size_attr="n_inner",
    ),
}


def layer_structure(model: torch.nn.Module) -> LayerStructure:
    model_type = getattr(model.config, "model_type", None)
    structure = STRUCTURE_BY_MODEL_TYPE.get(model_type)
    if structure is None:
        supported = ", ".join(sorted(STRUCTURE_BY_MODEL_TYPE))
        raise EngineUserError(
            f"Removing heads or neurons is not mapped for model_type {model_type!r} (supported: {supported}); "
            "use structure 'unstructured' or '2:4' for this model."
        )
    return structure


def transformer_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Each layer with its full module name in `model` (e.g. 'bert.encoder.layer.3')."""
    structure = layer_structure(model)
    base = model.base_model
    prefix = next(name for name, module in model.named_modules() if module is base)
    path = f"{prefix}.{structure.layers}" if prefix else structure.layers
    layers = model.get_submodule(path)
    return [(f"{path}.{index}", layer) for index, layer in enumerate(layers)]


def head_dim(model: torch.nn.Module) -> int:
    """Width of one head; pruning keeps it and changes only the number of heads."""
    return model.config.hidden_size // model.config.num_attention_heads
