"""Per-task model I/O as data: which transformers Auto class loads it, which inputs it takes and
which output is compared. Shared by loading, ONNX export and the evaluation runners.
"""

from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from workers.engine.architectures.tasks import Task

AUTO_CLASS_BY_TASK = {
    "feature-extraction": AutoModel,
    "text-classification": AutoModelForSequenceClassification,
    "text-generation": AutoModelForCausalLM,
}

# The tensor each task is judged on: embeddings for encoders, logits otherwise.
OUTPUT_BY_TASK: dict[Task, str] = {
    "feature-extraction": "last_hidden_state",
    "text-classification": "logits",
    "text-generation": "logits",
}

# Tokenizer outputs a text model may take, in the order the exported graph declares them.
MODEL_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")

# Extra forward kwargs per task: a causal LM must not build a KV cache, or the export would
# gain cache outputs and the runners would return them.
FORWARD_KWARGS_BY_TASK: dict[Task, dict] = {
    "feature-extraction": {},
    "text-classification": {},
    "text-generation": {"use_cache": False},
}
