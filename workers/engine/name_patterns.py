"""Module-name patterns in technique params (`skip`, `modules`): regular expressions searched in
module paths such as 'bert.encoder.layer.0.output.dense', checked when the recipe is validated."""

import re
from typing import Annotated

from pydantic import AfterValidator

# The task heads of the supported architectures: classifier heads (BERT-like `classifier`, GPT-2's
# `score`), LM heads and poolers. They hold few parameters and produce what the task is judged on;
# GPT-2's LM head also shares its weight with the input embeddings.
TASK_HEAD_PATTERNS = (
    r"(^|\.)classifier(\.|$)",
    r"(^|\.)score$",
    r"(^|\.)lm_head$",
    r"(^|\.)pooler\.",
)


def _compiles(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"skip pattern {pattern!r} is not a valid regular expression: {exc}") from exc
    return patterns


NamePatterns = Annotated[list[str], AfterValidator(_compiles)]
