"""A language model's next-token distributions, kept small enough to store for every evaluated token.

Full logits are a vocabulary of floats per token: 513 KB for Llama 3's 128,256 tokens, so the default 256 rows
of 128 tokens took up to 16.8 GB on disk for each model measured, and a batch's copies several GB of memory.
Instead the reference (the original) keeps, per token: its TOP_K most likely tokens' ids and log-probabilities,
the log of the probability left to every other token, and TAIL_SAMPLES of those others with their
log-probabilities. A model compared with it keeps its own log-probabilities of the same tokens and of the
rest, and its most likely token. That is 2 x (TOP_K + TAIL_SAMPLES) + 1 and TOP_K + TAIL_SAMPLES + 2 floats a
token (1.5 KB and 0.8 KB).

From them, top-1 agreement is exact, and so is the KL divergence KL(original || result) over the original's
top TOP_K tokens. What the original leaves to the other tokens is sampled: the reference keeps TAIL_SAMPLES
tokens drawn from its distribution over the rest (with a fixed seed), from which the KL within the rest is
estimated without bias (agreement_and_kl), so the job's mean KL comes out as the full vocabulary's within a
sampling noise that is small against the KL itself, however small that is.

Written here because the format is compresso's own: the reference must be reduced before the model
compared with it exists (a job never holds both), and the comparison needs the reference's token ids.
"""

import numpy as np

TOP_K = 128
TAIL_SAMPLES = 64
_SEED = 0
# Tokens converted to float64 at a time: a few arrays of a vocabulary of float64 per token.
_CHUNK_TOKENS = 64
# Token ids are kept as float32 beside the log-probabilities, which is exact below 2**24.
_MAX_EXACT_ID = 2**24


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _rest(log_probs: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Probabilities per row with the tokens `ids` at zero."""
    probs = np.exp(log_probs)
    np.put_along_axis(probs, ids, 0.0, axis=-1)
    return probs


def _log_rest(log_probs: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """log of the probability of every token but `ids`, per row; -inf when `ids` hold the whole vocabulary."""
    with np.errstate(divide="ignore"):
        return np.log(_rest(log_probs, ids).sum(axis=-1))


def _tail_samples(log_probs: np.ndarray, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """TAIL_SAMPLES tokens per row drawn from every token but `ids`, in proportion to their probability; the
    most likely token where `ids` hold the whole vocabulary."""
    cumulative = np.cumsum(_rest(log_probs, ids), axis=-1)
    total = cumulative[:, -1]
    draws = rng.random((len(cumulative), TAIL_SAMPLES)) * total[:, None]
    samples = np.stack([np.searchsorted(row, draw, side="right") for row, draw in zip(cumulative, draws, strict=True)])
    return np.where(total[:, None] > 0, np.minimum(samples, cumulative.shape[-1] - 1), ids[:, :1])


def reduce_reference(logits: np.ndarray) -> np.ndarray:
    """(tokens, vocab) logits -> (tokens, 2k + 1 + 2 x TAIL_SAMPLES) float32: the k most likely token ids (most
    likely first), their log-probabilities, the log-probability of every other token, and the ids and
    log-probabilities of TAIL_SAMPLES tokens drawn from those others. k = min(TOP_K, vocab)."""
    if logits.shape[-1] > _MAX_EXACT_ID:
        raise ValueError(f"A vocabulary of {logits.shape[-1]:,} tokens is more than float32 ids can hold.")
    k = min(TOP_K, logits.shape[-1])
    rng = np.random.default_rng(_SEED)
    parts = []
    for start in range(0, len(logits), _CHUNK_TOKENS):
        log_probs = _log_softmax(logits[start : start + _CHUNK_TOKENS])
        ids = np.argpartition(-log_probs, k - 1, axis=-1)[:, :k]
        top = np.take_along_axis(log_probs, ids, axis=-1)
        order = np.argsort(-top, axis=-1, kind="stable")
        ids, top = np.take_along_axis(ids, order, axis=-1), np.take_along_axis(top, order, axis=-1)
        samples = _tail_samples(log_probs, ids, rng)
        parts.append(np.concatenate([
            ids, top, _log_rest(log_probs, ids)[:, None], samples, np.take_along_axis(log_probs, samples, axis=-1),
        ], axis=-1).astype(np.float32))
    return np.concatenate(parts) if parts else np.zeros((0, 2 * k + 1 + 2 * TAIL_SAMPLES), np.float32)


def _top_k(reference: np.ndarray) -> int:
    return (reference.shape[-1] - 1 - 2 * TAIL_SAMPLES) // 2


def reduce_against(logits: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(tokens, vocab) logits of a model compared with `reference` (reduce_reference's, the same tokens) ->
    (tokens, k + 2 + TAIL_SAMPLES) float32: its log-probabilities of the reference's k tokens and of every
    other token, its most likely token's id, and its log-probabilities of the reference's sampled tokens."""
    if len(logits) != len(reference):
        raise ValueError(f"{len(logits)} tokens to compare with a reference of {len(reference)}.")
    k = _top_k(reference)
    parts = []
    for start in range(0, len(logits), _CHUNK_TOKENS):
        log_probs = _log_softmax(logits[start : start + _CHUNK_TOKENS])
        rows = np.asarray(reference[start : start + _CHUNK_TOKENS])
        ids, samples = rows[:, :k].astype(np.int64), rows[:, 2 * k + 1 : 2 * k + 1 + TAIL_SAMPLES].astype(np.int64)
        parts.append(np.concatenate([
            np.take_along_axis(log_probs, ids, axis=-1), _log_rest(log_probs, ids)[:, None],
            log_probs.argmax(axis=-1)[:, None], np.take_along_axis(log_probs, samples, axis=-1),
        ], axis=-1).astype(np.float32))
    return np.concatenate(parts) if parts else np.zeros((0, k + 2 + TAIL_SAMPLES), np.float32)


def agreement_and_kl(reference: np.ndarray, compared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per token: whether both models' most likely token is the same, and the KL divergence, exact over the
    reference's top k tokens and sampled over the rest (module docstring)."""
    reference, compared = np.asarray(reference, np.float64), np.asarray(compared, np.float64)
    k = _top_k(reference)
    if compared.shape != (len(reference), k + 2 + TAIL_SAMPLES):
        raise ValueError(f"Outputs of shape {compared.shape} were not reduced against this reference of {k} tokens.")
    log_p, log_p_rest = reference[:, k : 2 * k], reference[:, 2 * k]
    log_q, log_q_rest = compared[:, :k], compared[:, k]
    agree = reference[:, 0] == compared[:, k + 1]
    # The rest's share: p_rest x (log p_rest - log q_rest + KL between the two distributions within the rest).
    # With r = q/p within the rest, that KL is E[r - 1 - log r] over tokens drawn from p there (E[r] is 1):
    # every term is at least 0 and small where q is close to p, so few draws estimate it well.
    with np.errstate(invalid="ignore"):  # no rest (a vocabulary within k): -inf - -inf, left out below
        log_p_samples = reference[:, 2 * k + 1 + TAIL_SAMPLES :] - log_p_rest[:, None]
        log_ratio = (compared[:, k + 2 :] - log_q_rest[:, None]) - log_p_samples
        within = (np.exp(log_ratio) - 1 - log_ratio).mean(axis=-1)
        tail = np.exp(log_p_rest) * (log_p_rest - log_q_rest + within)
    return agree, (np.exp(log_p) * (log_p - log_q)).sum(axis=-1) + np.where(np.isfinite(log_p_rest), tail, 0.0)
