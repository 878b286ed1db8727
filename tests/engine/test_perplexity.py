"""Strided perplexity on cases whose answer is known: a uniform model's perplexity is the vocabulary
size, every token after the first is scored exactly once whatever the window, and with one window the
figure equals transformers' own loss on the same tokens."""

import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.factories import SAMPLE_TEXTS
from workers.engine.evaluation.perplexity import TokenStream, general_sample, strided_perplexity, token_stream
from workers.engine.evaluation.runners import TorchRunner


class UniformModel:
    """A language model that gives every token the same probability."""

    runtime, device, threads = "numpy", "cpu", 1

    def __init__(self, vocab: int):
        self.vocab = vocab
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        return np.zeros((*batch["input_ids"].shape, self.vocab), dtype=np.float32)


@pytest.mark.parametrize(("length", "window", "stride"), [(100, 16, 8), (100, 16, 16), (100, 200, None), (37, 10, 3)])
def test_a_uniform_model_has_the_vocabulary_size_as_perplexity(length, window, stride):
    stream = TokenStream(np.arange(length, dtype=np.int64) % 50, "test")
    model = UniformModel(50)
    result = strided_perplexity(model, stream, window, stride)
    assert result.perplexity == pytest.approx(50, rel=1e-9)
    assert result.tokens == length - 1  # each token after the first, exactly once


def test_one_window_equals_transformers_own_loss(tiny_models):
    folder = tiny_models["causal-lm"]
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    stream = token_stream(tokenizer, SAMPLE_TEXTS, "sample", max_tokens=100)
    runner = TorchRunner(model, "text-generation", ["input_ids", "attention_mask"], "cpu")
    result = strided_perplexity(runner, stream, window=128)
    with torch.no_grad():
        loss = model(input_ids=torch.from_numpy(stream.ids)[None], labels=torch.from_numpy(stream.ids)[None]).loss
    assert result.perplexity == pytest.approx(math.exp(loss.item()), rel=1e-4)
    # Shorter windows see less context, and the same model scores the same tokens the same way twice.
    assert strided_perplexity(runner, stream, window=32).tokens == result.tokens
    assert strided_perplexity(runner, stream, window=128).perplexity == result.perplexity


def test_the_general_sample_is_the_same_for_every_job(tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["causal-lm"])
    first, second = general_sample(tokenizer, 500), general_sample(tokenizer, 500)
    assert first.source == "builtin" and len(first.ids) == 500 and np.array_equal(first.ids, second.ids)
