"""Which unlabelled rows of a dataset a user should label next, so that a classifier trained on the
labels (a finetune job) learns most from the fewest of them: active learning by uncertainty plus
diversity, on the embeddings of the model the user will fine-tune.

- Each row is embedded once: the model's mean-pooled last hidden state, normalised.
- Uncertainty: with labelled rows of at least two classes, a logistic-regression probe (scikit-learn)
  is fitted on their embeddings, and a row's uncertainty is 1 - (p1 - p2), the margin between its two
  likeliest classes under the probe ("breaking ties"). Without such labels, a classifier's own outputs
  give the margin; an encoder without labels gets none.
- Diversity: rows are picked one at a time, each maximising uncertainty x its cosine distance to the
  nearest labelled or already picked row, so the picks spread over the space instead of piling up on
  one confusing region; with no uncertainty that is greedy k-center (a core-set).

The probe and the greedy pick are hand-written around scikit-learn rather than taken from an
active-learning library (small-text, modAL): those wrap their own classifier and training loop, where
here the model is the user's, only embedded, and the whole strategy is a few lines over numpy.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from workers.engine.errors import EngineUserError
from workers.engine.evaluation.dataset_format import iter_rows
from workers.engine.loading import load_model, load_tokenizer
from workers.engine.model_folder import ModelFolderError, inspect_model_folder
from workers.engine.training.data import collate, tokenise
from workers.engine.training.losses import mean_pool

logger = logging.getLogger(__name__)

_BATCH = 64
# Rows are judged on their first tokens: enough to place a sentence or a short paragraph.
SEQUENCE_LENGTH = 128
MAX_SUGGESTIONS = 1000


@dataclass
class Suggestions:
    method: str  # "probe", "model" or "diversity": where the uncertainty came from
    labelled_rows: int
    unlabelled_rows: int
    classes: list[str]
    rows: list[dict] = field(default_factory=list)  # {row, text, uncertainty, predicted}

    def as_dict(self) -> dict:
        return {
            "method": self.method, "labelled_rows": self.labelled_rows, "unlabelled_rows": self.unlabelled_rows,
            "classes": self.classes, "rows": self.rows,
        }


@torch.no_grad()
def embed(model: torch.nn.Module, tokenizer, texts: list[str], sequence_length: int = SEQUENCE_LENGTH):  # noqa: ANN001
    """(normalised mean-pooled last hidden states, the model's class probabilities or None)."""
    examples = tokenise(tokenizer, texts, None, sequence_length)
    if len(examples) != len(texts):
        raise EngineUserError("Some rows tokenise to nothing; remove rows whose text is empty.")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    embeddings, probabilities = [], []
    for start in range(0, len(examples), _BATCH):
        batch = collate(examples[start:start + _BATCH], pad_id)
        mask = batch["attention_mask"].to(device)
        outputs = model(input_ids=batch["input_ids"].to(device), attention_mask=mask, output_hidden_states=True)
        embeddings.append(F.normalize(mean_pool(outputs.hidden_states[-1], mask).float(), dim=-1).cpu())
        if getattr(outputs, "logits", None) is not None:
            probabilities.append(outputs.logits.float().softmax(-1).cpu())
    return torch.cat(embeddings).numpy(), torch.cat(probabilities).numpy() if probabilities else None


def margin_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """1 - (p1 - p2): 1 where the two likeliest classes tie, 0 where one class takes everything."""
    top = np.sort(probabilities, axis=1)[:, -2:]
    return 1 - (top[:, 1] - top[:, 0])


def probe_probabilities(
    embeddings: np.ndarray, labelled: np.ndarray, label_ids: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Class probabilities of every row under a logistic regression fitted on the labelled rows."""
    probe = LogisticRegression(max_iter=1000, C=1.0, random_state=seed)
    probe.fit(embeddings[labelled], label_ids)
    return probe.predict_proba(embeddings)


def diverse_pick(
    embeddings: np.ndarray, candidates: np.ndarray, anchors: np.ndarray, uncertainty: np.ndarray | None, count: int
) -> list[int]:
    """Greedy: each pick maximises uncertainty x cosine distance to the nearest anchor or earlier pick
    (plain k-center when `uncertainty` is None). Returns row indices, in the order picked."""
    weights = np.ones(len(embeddings)) if uncertainty is None else np.clip(uncertainty, 1e-6, None)
    pool = embeddings[candidates]
    if len(anchors):
        distance = 1 - (pool @ embeddings[anchors].T).max(axis=1)
    else:
        # No anchor: ties go to the rows nearest the mean (the most typical) first, then picks spread out.
        distance = 1 + 1e-3 * (pool @ pool.mean(axis=0))
    distance = np.clip(distance, 0, None)
    picked: list[int] = []
    available = np.ones(len(candidates), dtype=bool)
    for _ in range(min(count, len(candidates))):
        value = np.where(available, weights[candidates] * distance, -1.0)
        best = int(value.argmax())
        picked.append(int(candidates[best]))
        available[best] = False
        distance = np.minimum(distance, np.clip(1 - pool @ pool[best], 0, None))
    return picked


def suggest(
    embeddings: np.ndarray, names: list[str | None], count: int, model_probabilities: np.ndarray | None = None,
    model_classes: list[str] | None = None, seed: int = 0,
) -> tuple[str, list[str], list[int], np.ndarray | None, np.ndarray | None]:
    """(method, classes, rows picked, uncertainty per row, predicted class index per row) for rows
    `names` leaves unlabelled (None)."""
    labelled = np.array([name is not None for name in names])
    classes = sorted({name for name in names if name is not None})
    candidates = np.flatnonzero(~labelled)
    uncertainty = predicted = None
    if len(classes) >= 2:
        method = "probe"
        index = {name: position for position, name in enumerate(classes)}
        ids = np.array([index[name] for name in names if name is not None])
        probabilities = probe_probabilities(embeddings, labelled, ids, seed)
    elif model_probabilities is not None:
        method, classes, probabilities = "model", list(model_classes or []), model_probabilities
    else:
        method, probabilities = "diversity", None
    if probabilities is not None:
        uncertainty, predicted = margin_uncertainty(probabilities), probabilities.argmax(axis=1)
    rows = diverse_pick(embeddings, candidates, np.flatnonzero(labelled), uncertainty, count)
    return method, classes, rows, uncertainty, predicted


def suggest_labels(model_dir: Path, dataset_path: Path, count: int, device: str = "cpu") -> Suggestions:
    """The `count` unlabelled rows of the dataset to label next, for a classifier built on the model."""
    if not 1 <= count <= MAX_SUGGESTIONS:
        raise EngineUserError(f"n must be between 1 and {MAX_SUGGESTIONS}; it is {count}.")
    try:
        info = inspect_model_folder(model_dir)
    except ModelFolderError as exc:
        raise EngineUserError(str(exc)) from exc
    if info.task not in ("feature-extraction", "text-classification"):
        raise EngineUserError(
            f"Label suggestions are for classifiers built on an encoder or a classifier; this model's task is {info.task}."
        )
    rows = [row for _line, row in iter_rows(dataset_path)]
    names = [None if row.get("label") is None else str(row["label"]) for row in rows]
    unlabelled = sum(name is None for name in names)
    if unlabelled == 0:
        raise EngineUserError("Every row of this dataset is labelled already: there is nothing to suggest.")
    model = load_model(model_dir, info.task, device)
    embeddings, probabilities = embed(model, load_tokenizer(model_dir), [row["text"] for row in rows])
    model_classes = None
    if info.task == "text-classification":
        model_classes = [str(model.config.id2label[index]) for index in range(model.config.num_labels)]
    method, classes, picked, uncertainty, predicted = suggest(embeddings, names, count, probabilities, model_classes)
    result = Suggestions(method=method, labelled_rows=len(rows) - unlabelled, unlabelled_rows=unlabelled,
                         classes=classes)
    for row in picked:
        result.rows.append({
            "row": row,
            "text": rows[row]["text"],
            "uncertainty": None if uncertainty is None else round(float(uncertainty[row]), 4),
            "predicted": None if predicted is None else classes[int(predicted[row])],
        })
    logger.info("suggested %d of %d unlabelled rows (%s)", len(result.rows), unlabelled, method)
    return result
