"""Perplexity of a causal LM, the figure LLM users read first, measured the standard way: the texts
are joined into one token stream and scored with a sliding window of the model's context, each
window scoring only the tokens the previous one did not, so every token after the first is predicted
once and (past the first window) with at least `window - stride` tokens of context.

It runs through a Runner, so the original (PyTorch) and the result (on its target runtime) are scored
by the same code on the same tokens.
"""

import math
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

from workers.engine.evaluation.data import load_eval_dataset
from workers.engine.evaluation.fidelity import log_softmax
from workers.engine.evaluation.runners import Runner
from workers.engine.report import PerplexityPair, PerplexityReport


@dataclass(frozen=True)
class TokenStream:
    ids: np.ndarray  # int64, one row
    source: str


def token_stream(tokenizer: PreTrainedTokenizerBase, texts: list[str], source: str, max_tokens: int) -> TokenStream:
    """The texts joined by the tokenizer's end-of-text token (or a newline when it has none), cut to max_tokens."""
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else tokenizer.encode(
        "\n", add_special_tokens=False
    )
    ids: list[int] = []
    if tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
    for text in texts:
        ids.extend(tokenizer.encode(text, add_special_tokens=False))
        ids.extend(separator)
        if len(ids) >= max_tokens:
            break
    return TokenStream(np.asarray(ids[:max_tokens], dtype=np.int64), source)


def general_sample(tokenizer: PreTrainedTokenizerBase, max_tokens: int) -> TokenStream:
    """compresso's builtin English sample: the same text for every job, so two jobs' figures compare."""
    builtin = load_eval_dataset(None, max_samples=100_000)  # every line of it
    return token_stream(tokenizer, builtin.texts, "builtin", max_tokens)


@dataclass(frozen=True)
class Perplexity:
    perplexity: float
    mean_nll: float
    tokens: int
    window: int
    stride: int
    source: str


def strided_perplexity(runner: Runner, stream: TokenStream, window: int, stride: int | None = None) -> Perplexity:
    """exp(mean negative log-likelihood) of every token of the stream after the first."""
    ids = stream.ids
    if len(ids) < 2:
        raise ValueError("Perplexity needs at least two tokens of text.")
    window = min(window, len(ids))
    # A window's first token has no context inside it, so windows overlap by at least one token.
    stride = min(stride or window // 2, window - 1)
    total_nll, scored, previous_end = 0.0, 0, 0
    start = 0
    while True:
        end = min(start + window, len(ids))
        chunk = ids[start:end][None, :]
        logits = runner({"input_ids": chunk, "attention_mask": np.ones_like(chunk)})[0]
        # Position p predicts token p + 1; only the targets past the previous window's end are new.
        first_target = max(previous_end, start + 1)
        targets = ids[first_target:end]
        log_probs = log_softmax(logits[first_target - start - 1 : end - start - 1])
        total_nll -= float(log_probs[np.arange(len(targets)), targets].sum())
        scored += len(targets)
        previous_end = end
        if end == len(ids):
            break
        start += stride
    mean_nll = total_nll / scored
    return Perplexity(math.exp(mean_nll), mean_nll, scored, window, stride, stream.source)


class PerplexityProbe:
    """Scores the original and the result on the job's texts and on the builtin sample (causal LMs only)."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, texts: list[str], window: int, max_tokens: int,
        max_positions: int | None,
    ):
        self.window = min(window, max_positions) if max_positions else window
        self.streams = {
            "dataset": token_stream(tokenizer, texts, "dataset", max_tokens),
            "general": general_sample(tokenizer, max_tokens),
        }
        self.scores: dict[str, dict[str, Perplexity]] = {}

    def measure(self, side: str, runner: Runner) -> None:
        self.scores[side] = {name: strided_perplexity(runner, stream, self.window) for name, stream in self.streams.items()}

    def report(self) -> PerplexityReport:
        pairs = {}
        for name in self.streams:
            original, result = self.scores["original"][name], self.scores["result"][name]
            pairs[name] = PerplexityPair(
                source=original.source, tokens=original.tokens, window=original.window, stride=original.stride,
                original=original.perplexity, result=result.perplexity,
                relative_increase=result.perplexity / original.perplexity - 1,
            )
        return PerplexityReport(**pairs)
