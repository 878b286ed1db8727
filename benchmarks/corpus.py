"""The benchmark's text corpus: real English sentences available offline, split into a training /
calibration part and a held-out part that no job ever sees.

Sources: compresso's builtin evaluation sample (320 sentences in many registers) and the prose of
the Python language reference shipped with CPython (`pydoc_data.topics`), cut into sentences and
filtered to plain text (no code, no markup). Deterministic: sorted, then split with a fixed seed.
"""

import random
import re
from pathlib import Path

from pydoc_data.topics import topics

from workers.engine.evaluation.data import BUILTIN_SAMPLE_PATH

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODE_LIKE = re.compile(r"[=_{}\[\]<>|*`\\]|\.\.\.|::|\(\)|\w\.\w")


def reference_sentences() -> list[str]:
    text = re.sub(r"\s+", " ", " ".join(topics.values()))
    kept = set()
    for sentence in _SENTENCE_END.split(text):
        words = sentence.split()
        if not 8 <= len(words) <= 40 or not sentence.endswith(".") or _CODE_LIKE.search(sentence):
            continue
        if sum(char.isalpha() or char == " " for char in sentence) / len(sentence) < 0.9:
            continue
        kept.add(sentence)
    return sorted(kept)


def builtin_sentences() -> list[str]:
    return [line.strip() for line in Path(BUILTIN_SAMPLE_PATH).read_text(encoding="utf-8").splitlines() if line.strip()]


def split_corpus(heldout_fraction: float = 0.3, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, heldout): each source is split in the same proportion, so both halves mix registers."""
    rng = random.Random(seed)
    train, heldout = [], []
    for sentences in (builtin_sentences(), reference_sentences()):
        shuffled = sentences[:]
        rng.shuffle(shuffled)
        cut = round(len(shuffled) * heldout_fraction)
        heldout.extend(shuffled[:cut])
        train.extend(shuffled[cut:])
    return train, heldout
