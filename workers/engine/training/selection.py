"""Which texts of the transfer set a distillation or recovery trains on: all of them, a random subset,
or an active choice of the ones that teach the student most, re-made as the student learns.

The active choice scores every text by how far the student is from the teacher on it (1 - cosine of
the pooled embeddings for encoders, the KL of the outputs for classifiers and causal LMs) and takes the
k highest-scoring ones, passing over near-duplicates (by the teacher's pooled last hidden states), so
a text repeated in the dataset is not picked many times.

Hand-written: active-learning libraries (modAL, small-text) select rows for a human to label and wrap
sklearn or their own trainers; here the "labels" are the teacher's outputs, free to compute, and the
selection has to run inside our own training loop between steps.
"""

import logging
import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from workers.engine.architectures.tasks import Task
from workers.engine.training.data import Example, collate
from workers.engine.training.losses import mean_pool, soft_kl

logger = logging.getLogger(__name__)

_SCORE_BATCH = 64
# A causal LM's scoring holds two (batch, tokens, vocab) logit tensors: far fewer rows at a time.
_SCORE_BATCH_CAUSAL_LM = 4
# Two texts whose teacher embeddings are this close count as one for the choice. Diversity stops there:
# spreading the choice over the space (greedy k-center over the 2k most disagreeing texts) lost 0.005
# held-out fidelity against the plain top-k on MiniLM (benchmarks/results/data_bench.md), as it favours
# outlying texts.
NEAR_DUPLICATE_COSINE = 0.98


@dataclass
class SelectionLog:
    """What the report says about the choice of texts."""

    method: str
    pool: int  # texts available
    max_examples: int | None
    rounds: int = 0  # selections made (active: the first, then one per re-scoring)
    distinct_used: set[int] = field(default_factory=set)  # texts trained on in any round
    mean_score_chosen: list[float] = field(default_factory=list)  # per round, the chosen texts' mean disagreement
    mean_score_pool: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "method": self.method, "pool_texts": self.pool, "max_examples": self.max_examples,
            "rounds": self.rounds, "distinct_texts_used": len(self.distinct_used),
            "mean_disagreement_chosen": [round(value, 6) for value in self.mean_score_chosen],
            "mean_disagreement_pool": [round(value, 6) for value in self.mean_score_pool],
        }


def _forward(model, task: Task, batch: dict[str, torch.Tensor]):
    kwargs = {"use_cache": False} if task == "text-generation" else {}
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True,
                 **kwargs)


def _disagreement(task: Task, student_out, teacher_out, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per row: how far the student's output is from the teacher's."""
    if task == "feature-extraction":
        return 1 - F.cosine_similarity(
            mean_pool(student_out.last_hidden_state, mask), mean_pool(teacher_out.last_hidden_state, mask), dim=-1
        )
    if task == "text-classification":
        return soft_kl(student_out.logits, teacher_out.logits, temperature)
    per_token = soft_kl(student_out.logits, teacher_out.logits, temperature)
    weights = mask.to(per_token.dtype)
    return (per_token * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


@torch.no_grad()
def score_pool(
    student, teacher, task: Task, pool: list[Example], pad_id: int, temperature: float,
    teacher_embeddings: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(disagreement per text, the teacher's normalised pooled last hidden state per text); pass the
    embeddings back in to skip the teacher's forward for them."""
    was_training = student.training
    student.eval()
    device = next(student.parameters()).device
    scores, embeddings = [], []
    rows = _SCORE_BATCH_CAUSAL_LM if task == "text-generation" else _SCORE_BATCH
    try:
        for start in range(0, len(pool), rows):
            batch = {key: value.to(device) for key, value in collate(pool[start:start + rows], pad_id).items()}
            mask = batch["attention_mask"]
            teacher_out = _forward(teacher, task, batch)
            student_out = _forward(student, task, batch)
            scores.append(_disagreement(task, student_out, teacher_out, mask, temperature).float().cpu())
            if teacher_embeddings is None:
                embeddings.append(F.normalize(mean_pool(teacher_out.hidden_states[-1], mask).float(), dim=-1).cpu())
    finally:
        student.train(was_training)
    return torch.cat(scores), teacher_embeddings if teacher_embeddings is not None else torch.cat(embeddings)


def without_near_duplicates(embeddings: torch.Tensor, ranked: list[int], count: int) -> list[int]:
    """The first `count` of `ranked` (highest priority first), passing over any text whose teacher
    embedding is within NEAR_DUPLICATE_COSINE of one already picked; those fill up the end only when
    too few distinct texts are left."""
    picked: list[int] = []
    passed_over: list[int] = []
    for index in ranked:
        if len(picked) == count:
            break
        if picked and float((embeddings[picked] @ embeddings[index]).max()) >= NEAR_DUPLICATE_COSINE:
            passed_over.append(index)
        else:
            picked.append(index)
    return picked + passed_over[: count - len(picked)]


def active_choice(scores: torch.Tensor, embeddings: torch.Tensor, count: int) -> list[int]:
    """The `count` texts the student disagrees with the teacher on most, near-duplicates passed over."""
    return without_near_duplicates(embeddings, torch.argsort(scores, descending=True).tolist(), count)


def random_choice(pool_size: int, count: int, seed: int) -> list[int]:
    return sorted(random.Random(seed).sample(range(pool_size), min(count, pool_size)))
