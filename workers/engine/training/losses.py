"""Distillation losses per task: classifier (hard labels + soft teacher labels), encoder (pooled
embeddings + hidden states) and causal LM (token-level KL)."""

import torch
import torch.nn.functional as F

UNLABELLED = -1


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)) per row (over the last dim). The T² keeps the gradient
    scale independent of T (Hinton et al., 2015)."""
    student_log = F.log_softmax(student_logits / temperature, dim=-1)
    teacher_log = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(student_log, teacher_log, log_target=True, reduction="none").sum(dim=-1)
    return temperature**2 * kl


def classifier_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """Mean over rows of α·CE(label) + (1−α)·T²·KL; a row without a label (UNLABELLED) has no hard
    term, so its KL term is taken alone rather than scaled down by a weight meant for a pair. Without
    teacher logits (fine-tuning on labels alone) it is the plain cross-entropy."""
    if teacher_logits is None:
        return F.cross_entropy(student_logits, labels)
    soft = soft_kl(student_logits, teacher_logits, temperature)
    if labels is None:
        return soft.mean()
    labelled = labels != UNLABELLED
    hard = F.cross_entropy(student_logits, labels.clamp(min=0), reduction="none")
    per_row = torch.where(labelled, alpha * hard + (1 - alpha) * soft, soft)
    return per_row.mean()


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """MSE over real (non-padding) token positions only."""
    mask = attention_mask.unsqueeze(-1).to(student.dtype)
    squared = ((student - teacher) ** 2 * mask).sum()
    return squared / (mask.sum() * student.shape[-1]).clamp(min=1)


def encoder_loss(
    student_last: torch.Tensor,
    teacher_last: torch.Tensor,
    student_hidden: list[torch.Tensor],
    teacher_hidden: list[torch.Tensor],
    attention_mask: torch.Tensor,
    hidden_state_weight: float,
) -> torch.Tensor:
    """(1 − cos) of the mean-pooled last_hidden_state (what fidelity is judged on) plus the weighted
    mean MSE of each mapped pair of layer outputs (student_hidden[i] stands for teacher_hidden[i])."""
    pooled = 1 - F.cosine_similarity(
        mean_pool(student_last, attention_mask), mean_pool(teacher_last, attention_mask), dim=-1
    )
    loss = pooled.mean()
    if hidden_state_weight > 0 and student_hidden:
        hidden = torch.stack([masked_mse(s, t, attention_mask) for s, t in zip(student_hidden, teacher_hidden)])
        loss = loss + hidden_state_weight * hidden.mean()
    return loss


def causal_lm_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, attention_mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Token-level T²·KL, averaged over non-padding positions."""
    per_token = soft_kl(student_logits, teacher_logits, temperature)
    mask = attention_mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)
