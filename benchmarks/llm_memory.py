"""How much memory an LLM job takes against the model's bytes (issue 21: the job's process at most about
1.2x): random-initialised Llama shapes (benchmarks/llm_scale.py's), stored in bf16 and sharded as uploads
are, each through an llm_quantize job exactly as a worker runs it (`python -m workers.engine run --spec`,
target torch on the CPU): the original measured, quantized by llm-compressor in its own process, the
result measured from its package. For time and memory only: the weights are random.

Per size: the bf16 weights' bytes; the engine process's peak RSS (its VmHWM, read every 20 ms), and that
peak less the `tiny` shape's job (the interpreter, torch and the libraries, which do not grow with the
model) over the weights' bytes less the tiny one's; llm-compressor's peak in its own process.

    .venv/bin/python benchmarks/llm_memory.py [--sizes tiny,small,1b] [--code DIR] [--out llm_memory]

`--code DIR` runs the engine of another checkout of compresso (say the commit before a change), with this
venv, so that a change's before and after come from one machine.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.llm_scale import SHAPES, write_calibration, write_model  # noqa: E402
from benchmarks.machine import cpu_model, run_child  # noqa: E402

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
EVALUATION = {
    "max_samples": 32, "sequence_length": 128, "latency_warmup": 1, "latency_repeats": 2,
    "latency_batch_sizes": [1], "energy_repeats": 2, "energy_inferences_per_run": 4,
    "perplexity_window": 256, "perplexity_max_tokens": 1024,
}
STEP = {"technique": "llm_quantize",
        "params": {"scheme": "w4a16", "algorithm": "rtn", "calibration_samples": 32, "max_sequence_length": 128}}


def run_size(size: str, code: Path, scratch: Path) -> dict:
    model_dir = scratch / "model"
    parameters = write_model(size, model_dir)
    weight_bytes = sum(path.stat().st_size for path in model_dir.glob("*.safetensors"))
    dataset = scratch / "dataset.jsonl"
    write_calibration(dataset, EVALUATION["max_samples"], EVALUATION["sequence_length"], SHAPES[size][5])
    spec = {
        "model_dir": str(model_dir), "dataset_path": str(dataset), "recipe": {"steps": [STEP]},
        "target": {"runtime": "torch", "device": "cpu"}, "eval": EVALUATION,
        "work_dir": str(scratch / "work"), "output_dir": str(scratch / "out"),
    }
    (scratch / "spec.json").write_text(json.dumps(spec))
    wall, peak = run_child([sys.executable, "-m", "workers.engine", "run", "--spec", str(scratch / "spec.json")], code)
    report = json.loads((scratch / "out" / "report.json").read_text())
    details = report["steps"][0]["details"]
    return {
        "size": size, "parameters": parameters, "weight_bytes": weight_bytes, "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak, 1), "reported_peak_rss_mb": report["job"].get("peak_rss_mb"),
        "llm_compressor_peak_rss_mb": details.get("peak_rss_mb"), "quantize_s": details.get("quantize_s"),
    }


def add_ratios(rows: list[dict]) -> None:
    """Each row's growth over the tiny shape's job, against its weights' growth."""
    base = next((row for row in rows if row["size"] == "tiny"), None)
    for row in rows:
        if base is None or row is base:
            continue
        weights_mb = (row["weight_bytes"] - base["weight_bytes"]) / 2**20
        row["engine_growth_vs_weights"] = round((row["peak_rss_mb"] - base["peak_rss_mb"]) / weights_mb, 3)
        if row["llm_compressor_peak_rss_mb"] and base["llm_compressor_peak_rss_mb"]:
            grown = row["llm_compressor_peak_rss_mb"] - base["llm_compressor_peak_rss_mb"]
            row["llm_compressor_growth_vs_weights"] = round(grown / weights_mb, 3)


def table(rows: list[dict]) -> str:
    lines = ["| size | parameters | bf16 weights MB | engine peak RSS MB | growth over tiny / weights | "
             "llm-compressor peak RSS MB | its growth / weights | job s |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['size']} | {row['parameters'] / 1e6:,.0f}M | {row['weight_bytes'] / 2**20:,.0f} | "
            f"{row['peak_rss_mb']:,.0f} | {row.get('engine_growth_vs_weights', '')} | "
            f"{row['llm_compressor_peak_rss_mb'] or 0:,.0f} | {row.get('llm_compressor_growth_vs_weights', '')} | "
            f"{row['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,small,1b", help=f"Comma-separated, tiny first: {', '.join(SHAPES)}")
    parser.add_argument("--code", type=Path, default=REPO_ROOT, help="The compresso checkout whose engine runs.")
    parser.add_argument("--out", default="llm_memory", help="Result files' name in benchmarks/results.")
    args = parser.parse_args()
    rows = []
    for size in args.sizes.split(","):
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            rows.append(run_size(size, args.code.resolve(), Path(scratch)))
        print(f"{size}: {json.dumps(rows[-1])} ({time.perf_counter() - started:.0f} s)", flush=True)
        add_ratios(rows)
        (RESULTS_DIR / f"{args.out}.json").write_text(json.dumps({"cpu": cpu_model(), "code": str(args.code),
                                                                  "rows": rows}, indent=2) + "\n")
    text = table(rows)
    print(text)
    (RESULTS_DIR / f"{args.out}.md").write_text(
        f"# {args.out}: an llm_quantize job's memory against the model's bytes\n\n"
        f"Command: `.venv/bin/python benchmarks/llm_memory.py --sizes {args.sizes} --out {args.out}`"
        f"{'' if args.code.resolve() == REPO_ROOT else ' --code ' + str(args.code)}\n\n"
        f"CPU: {cpu_model()}. W4A16 round-to-nearest on random-initialised bf16 Llama shapes; target torch on the "
        "CPU.\n\n" + text + "\n"
    )


if __name__ == "__main__":
    main()
