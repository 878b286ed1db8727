"""A language model's outputs kept as the original's top tokens and a sample of the rest: exact agreement,
the full vocabulary's mean KL, and the same figures whether rows run together or in groups."""

import numpy as np
import pytest
import torch

from workers.engine.evaluation import fidelity
from workers.engine.evaluation.fidelity import OutputStore, batch_outputs, item_fidelity
from workers.engine.evaluation.runners import TorchRunner, iter_batches
from workers.engine.evaluation.data import EvalDataset
from workers.engine.evaluation.token_distributions import (
    TAIL_SAMPLES, TOP_K, agreement_and_kl, reduce_against, reduce_reference,
)
from workers.engine.loading import load_model, load_tokenizer, model_input_names
from tests.factories import build_tiny_causal_lm


def _full(reference_logits: np.ndarray, compared_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    log_p = torch.log_softmax(torch.from_numpy(reference_logits).double(), dim=-1)
    log_q = torch.log_softmax(torch.from_numpy(compared_logits).double(), dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).numpy()
    return (log_p.argmax(-1) == log_q.argmax(-1)).numpy(), kl


def _pair(vocab: int, peak: float, noise: float, tokens: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    original = rng.normal(size=(tokens, vocab)).astype(np.float32)
    original[np.arange(tokens), rng.integers(0, vocab, tokens)] += peak  # one likely token per position
    return original, (original + noise * rng.normal(size=original.shape)).astype(np.float32)


@pytest.mark.parametrize("peak", [0.0, 12.0])
def test_agreement_is_exact_and_the_mean_kl_is_the_full_vocabularys(peak):
    original, compressed = _pair(vocab=5000, peak=peak, noise=0.3)
    reference = reduce_reference(original)
    assert reference.shape == (len(original), 2 * (TOP_K + TAIL_SAMPLES) + 1)
    agree, kl = agreement_and_kl(reference, reduce_against(compressed, reference))
    full_agree, full_kl = _full(original, compressed)
    np.testing.assert_array_equal(agree, full_agree)
    # Flat (most of the divergence outside the top tokens, so sampled) or peaked, the mean is the full one's.
    assert kl.mean() == pytest.approx(full_kl.mean(), rel=0.05)
    # The same outputs always give the same figures: the tail is sampled with a fixed seed.
    again = reduce_reference(original)
    np.testing.assert_array_equal(kl, agreement_and_kl(again, reduce_against(compressed, again))[1])


def test_a_vocabulary_within_top_k_gives_the_full_kl():
    original, compressed = _pair(vocab=TOP_K - 28, peak=2.0, noise=0.5)
    reference = reduce_reference(original)
    agree, kl = agreement_and_kl(reference, reduce_against(compressed, reference))
    full_agree, full_kl = _full(original, compressed)
    np.testing.assert_array_equal(agree, full_agree)
    np.testing.assert_allclose(kl, full_kl, rtol=1e-4, atol=1e-7)


def test_outputs_not_reduced_against_the_reference_are_refused():
    original, compressed = _pair(vocab=1000, peak=5.0, noise=0.1)
    with pytest.raises(ValueError, match="not reduced against"):
        agreement_and_kl(reduce_reference(original), reduce_reference(compressed))


def test_rows_run_in_groups_give_the_figures_of_one_batch(tmp_path, monkeypatch):
    model_dir = build_tiny_causal_lm("llama", tmp_path / "lm")
    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir, "text-generation")
    runner = TorchRunner(model, "text-generation", model_input_names(model, tokenizer), "cpu")
    texts = [f"row {index} " + "words of uneven length " * (index % 5 + 1) for index in range(12)]
    dataset = EvalDataset(texts=texts, text_pairs=None, labels=None, slices=None, source="uploaded")
    batches = list(iter_batches(tokenizer, dataset, 12, 64))
    whole = OutputStore(tmp_path / "whole")
    for batch in batches:
        whole.append(batch_outputs("text-generation", runner, batch))
    # A budget of three rows' logits: the rows then run three at a time.
    row_bytes = batches[0]["input_ids"].shape[1] * model.config.vocab_size * 4
    monkeypatch.setattr(fidelity, "_LM_LOGIT_BYTES", 3 * row_bytes)
    grouped = OutputStore(tmp_path / "grouped")
    for batch, reference in zip(batches, whole, strict=True):
        grouped.append(batch_outputs("text-generation", runner, batch, reference))
    items = item_fidelity("text-generation", whole, grouped)
    assert len(items.primary) == int(sum(batch["attention_mask"].sum() for batch in batches))
    assert items.primary.mean() == 1.0 and np.abs(items.kl).max() < 1e-6
