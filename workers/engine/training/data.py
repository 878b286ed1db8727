"""The transfer set: tokenised texts, their augmented copies, and padded batches.

Augmentation works on token ids rather than on words, so it is the same for any tokenizer and
never produces a token the teacher's vocabulary lacks.
"""

import random
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase
from transformers.trainer_pt_utils import get_length_grouped_indices

from workers.engine.training.losses import UNLABELLED
from workers.engine.training.settings import AugmentKind

MASK_RATE = 0.15
DROP_RATE = 0.15
SPAN_FRACTION = 0.2
_SINGLE_KINDS = ("token_mask", "token_dropout", "span_deletion")
_MIXED_KINDS = (*_SINGLE_KINDS, "splice")


@dataclass(frozen=True)
class Example:
    ids: tuple[int, ...]
    label: int = UNLABELLED


def tokenise(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], labels: list[int] | None, sequence_length: int
) -> list[Example]:
    encoded = tokenizer(texts, truncation=True, max_length=sequence_length)["input_ids"]
    labels = labels if labels is not None else [UNLABELLED] * len(texts)
    return [Example(tuple(ids), label) for ids, label in zip(encoded, labels) if ids]


def _alter(
    ids: tuple[int, ...], kind: str, special: set[int], mask_id: int | None, rng: random.Random
) -> tuple[int, ...]:
    body = [index for index, token in enumerate(ids) if token not in special]
    if len(body) < 2:
        return ids
    if kind == "token_mask" and mask_id is not None:
        chosen = {index for index in body if rng.random() < MASK_RATE}
        return tuple(mask_id if index in chosen else token for index, token in enumerate(ids))
    if kind == "span_deletion":
        length = max(1, round(SPAN_FRACTION * len(body)))
        start = rng.randrange(len(body) - length + 1)
        dropped = set(body[start:start + length])
    else:  # token_dropout, and token_mask for tokenizers without a mask token (e.g. GPT-2)
        dropped = {index for index in body if rng.random() < DROP_RATE}
        if len(dropped) == len(body):
            dropped.discard(body[0])
    return tuple(token for index, token in enumerate(ids) if index not in dropped)


def _splice(
    first: tuple[int, ...], second: tuple[int, ...], special: set[int], rng: random.Random
) -> tuple[int, ...]:
    """The start of `first` joined to the end of `second`, inside `first`'s special tokens, no longer
    than the longer of the two (so within the sequence length both were cut to)."""
    body = [index for index, token in enumerate(first) if token not in special]
    other = [token for token in second if token not in special]
    if len(body) < 2 or len(other) < 2:
        return first
    longest = max(len(body), len(other))
    keep = rng.randint(1, len(body) - 1)
    # keep <= longest - 1, so the lower bound never passes the upper one.
    cut = rng.randint(max(1, keep + len(other) - longest), len(other) - 1)
    head, tail = first[: body[0]], first[body[-1] + 1:]
    return head + tuple(first[index] for index in body[:keep]) + tuple(other[cut:]) + tail


def augment(
    examples: list[Example], tokenizer: PreTrainedTokenizerBase, kind: AugmentKind, copies: int, seed: int
) -> list[Example]:
    """The originals followed by up to `copies` distinct altered copies of each. Copies carry no hard
    label: dropping or masking words can flip a sentence's class, while the teacher's soft label
    is recomputed on the altered text itself (as TinyBERT's augmentation does).

    `splice` joins the start of each text to the end of another one picked at random: new contexts
    for the same real words and phrases, where the other kinds only thin one text out. Distilling
    all-MiniLM-L6-v2 to 3 layers on 685 texts, 2,000 texts spliced that way (by words) lifted
    held-out fidelity from 0.8925 to 0.9105, where 6 masked, dropped or cut copies of each gave 0.8942."""
    if kind == "none" or copies == 0:
        return list(examples)
    rng = random.Random(seed)
    special = set(tokenizer.all_special_ids)
    mask_id = tokenizer.mask_token_id
    result = list(examples)
    for example in examples:
        seen = {example.ids}
        for _ in range(copies):
            chosen = rng.choice(_MIXED_KINDS) if kind == "mixed" else kind
            if chosen == "splice":
                altered = _splice(example.ids, rng.choice(examples).ids, special, rng)
            else:
                altered = _alter(example.ids, chosen, special, mask_id, rng)
            if altered not in seen:
                seen.add(altered)
                result.append(Example(altered))
    return result


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Pads to the longest example of the batch (right padding, as the engine's tokenizers do)."""
    width = max(len(example.ids) for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        input_ids[row, : len(example.ids)] = torch.tensor(example.ids)
        attention_mask[row, : len(example.ids)] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": torch.tensor([example.label for example in examples], dtype=torch.long),
    }


def batch_indices(lengths: list[int], batch_size: int, total_steps: int, seed: int) -> list[list[int]]:
    """`total_steps` batches of example indices (`lengths[i]` is example i's token count), cycling
    over the examples as needed: each epoch a fresh permutation, grouped by length so a batch pads
    little, its batches then taken in random order.

    The grouping is transformers' own (the Trainer's group_by_length: mega-batches of up to 50
    batches of a random permutation, each sorted by length). Its batches run longest first within
    each mega-batch; shuffling them keeps every step a random draw of lengths instead. On
    all-MiniLM-L6-v2 distilled on 685 texts plus spliced copies (21 tokens on average), padding fell
    from 53% of the tokens to 4% and a training step took a third less time; 4 copies for 2 epochs
    reached held-out fidelity 0.9053 in 60 s, against 0.9064 in 85 s with random batches."""
    generator = torch.Generator().manual_seed(seed)
    batches: list[list[int]] = []
    while len(batches) < total_steps:
        order = get_length_grouped_indices(lengths, batch_size, generator=generator)
        epoch = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        batches.extend(epoch[index] for index in torch.randperm(len(epoch), generator=generator).tolist())
    return batches[:total_steps]
