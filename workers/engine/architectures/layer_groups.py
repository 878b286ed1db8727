"""Where each named layer group lives in an exported graph, per model_type, as regexes on node names.

The legacy ONNX exporter names nodes after the module path ("/encoder/layer.0/output/dense/MatMul"),
so a group is a pattern on that path. Generic code only ever looks groups up here.
"""

import re

_BERT_LIKE = {
    "ffn_input": r"/layer\.\d+/intermediate/dense/",
    # Anchored on the layer so the attention block's own "output/dense" is not matched.
    "ffn_output": r"/layer\.\d+/output/dense/",
}
_GPT2_LIKE = {
    "ffn_input": r"/h\.\d+/mlp/c_fc/",
    "ffn_output": r"/h\.\d+/mlp/c_proj/",
}

LAYER_GROUPS_BY_MODEL_TYPE: dict[str, dict[str, str]] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "distilbert": {"ffn_input": r"/layer\.\d+/ffn/lin1/", "ffn_output": r"/layer\.\d+/ffn/lin2/"},
    "gpt2": _GPT2_LIKE,
}


def layer_group_pattern(model_type: str, group: str) -> re.Pattern[str] | None:
    pattern = LAYER_GROUPS_BY_MODEL_TYPE.get(model_type, {}).get(group)
    return re.compile(pattern) if pattern else None
