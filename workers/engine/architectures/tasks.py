"""Which task a Hugging Face architecture class performs, judged by its class-name suffix.

The task decides how a model is loaded, exported and compared: an encoder is compared by its
pooled embeddings, a classifier and a language model by their output distributions.
"""

from typing import Literal

Task = Literal["feature-extraction", "text-classification", "text-generation"]

# Longest suffix first wins, so "ForSequenceClassification" is not mistaken for "Model".
TASK_BY_CLASS_SUFFIX: dict[str, Task] = {
    "ForSequenceClassification": "text-classification",
    "ForCausalLM": "text-generation",
    "LMHeadModel": "text-generation",
    "Model": "feature-extraction",
}

SUPPORTED_TASKS: tuple[Task, ...] = ("feature-extraction", "text-classification", "text-generation")


def task_for_architecture(architecture: str) -> Task | None:
    for suffix in sorted(TASK_BY_CLASS_SUFFIX, key=len, reverse=True):
        if architecture.endswith(suffix):
            return TASK_BY_CLASS_SUFFIX[suffix]
    return None
