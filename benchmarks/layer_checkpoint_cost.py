"""What llm_quantize's checkpoints between layers cost, and what going on from one saves: a random-initialised
Llama shape (benchmarks/llm_scale.py's) quantized by the script a job runs, three times:
- whole, with no checkpoints;
- whole, with a checkpoint after every layer (COMPRESSO_LAYER_CHECKPOINT_MINUTES=0, the costliest setting):
  the time and bytes of each;
- from the checkpoint after the middle layer, as a new attempt goes on: its wall time against the whole, and
  whether it wrote the same bytes as the run that was never stopped.
Random weights have no quality to measure; the time, bytes and equality are what this is for.

    .venv/bin/python benchmarks/layer_checkpoint_cost.py [--size small] [--scheme w4a16] [--samples 64]
        [--sequence 512] [--device cpu]

Writes benchmarks/results/layer_checkpoint_cost.md and .json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.llm_scale import SHAPES, write_calibration, write_model  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402
from workers.engine.techniques.llm.config import LlmQuantizeConfig  # noqa: E402
from workers.engine.techniques.llm.handler import SCRIPT, default_llm_python, script_spec  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"


def run_script(args: argparse.Namespace, scratch: Path, name: str, extra: dict) -> tuple[float, list[dict]]:
    config = LlmQuantizeConfig(scheme=args.scheme, algorithm=args.algorithm)
    spec = script_spec(config, scratch / "model", scratch / name, scratch / "calibration.jsonl", args.sequence) | extra
    (scratch / f"{name}.json").write_text(json.dumps(spec), encoding="utf-8")
    env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if args.device == "cpu" else {}))
    started = time.perf_counter()
    done = subprocess.run([args.python, str(SCRIPT), str(scratch / f"{name}.json")], capture_output=True, text=True,
                          env=env, check=False)
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed: {done.stderr[-3000:]}")
    return wall_s, [json.loads(line) for line in done.stdout.splitlines()]


def same_bytes(first: Path, second: Path) -> bool:
    files = sorted(path.name for path in first.glob("*.safetensors"))
    return bool(files) and files == sorted(path.name for path in second.glob("*.safetensors")) and all(
        (first / name).read_bytes() == (second / name).read_bytes() for name in files
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=list(SHAPES))
    parser.add_argument("--scheme", default="w4a16")
    parser.add_argument("--algorithm", default="gptq")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--sequence", type=int, default=512)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cpu")
    parser.add_argument("--python", default=str(default_llm_python()), help="The interpreter that has llmcompressor.")
    parser.add_argument("--output", default="layer_checkpoint_cost")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="layer-checkpoints-") as folder:
        scratch = Path(folder)
        # On the CPU in float32: bfloat16 matmuls on a CPU without AMX take several times longer.
        parameters = write_model(args.size, scratch / "model", "float32" if args.device == "cpu" else "bfloat16")
        write_calibration(scratch / "calibration.jsonl", args.samples, args.sequence, SHAPES[args.size][5])
        whole_s, _ = run_script(args, scratch, "whole", {})
        print(f"whole, no checkpoints: {whole_s:.1f} s", flush=True)
        saving_s, events = run_script(args, scratch, "saving",
                                      {"layer_checkpoints": {"dir": str(scratch / "checkpoints"), "interval_s": 0}})
        saves = [event for event in events if event["event"] == "layer_checkpoint"]
        print(f"whole, a checkpoint after every layer: {saving_s:.1f} s, {len(saves)} checkpoints", flush=True)
        middle = saves[len(saves) // 2 - 1] if len(saves) > 1 else saves[0]
        resumed_s, events = run_script(args, scratch, "resumed", {"resume_layers": middle["path"]})
        identical = same_bytes(scratch / "whole", scratch / "resumed")
        model_bytes = sum(path.stat().st_size for path in (scratch / "model").glob("*.safetensors"))
    result = {
        "args": vars(args), "machine": cpu_model(), "parameters": parameters, "model_bytes": model_bytes,
        "whole_s": round(whole_s, 1), "saving_s": round(saving_s, 1),
        "saves": [{key: save[key] for key in ("pass", "layers_done", "layers", "seconds", "bytes")} for save in saves],
        "resumed_after": {"pass": middle["pass"], "layers_done": middle["layers_done"], "layers": middle["layers"]},
        "resumed_s": round(resumed_s, 1), "resumed_identical": identical,
    }
    (RESULTS / f"{args.output}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    save_s = sum(save["seconds"] for save in saves)
    lines = [
        f"# llm_quantize checkpoints between layers: cost and saving ({args.size} Llama shape, "
        f"{parameters / 1e6:.0f}M parameters, random weights, {args.device})",
        "",
        f"Command: `.venv/bin/python benchmarks/layer_checkpoint_cost.py --size {args.size} --scheme {args.scheme} "
        f"--algorithm {args.algorithm} --samples {args.samples} --sequence {args.sequence} --device {args.device}`",
        f"Machine: {cpu_model()}. The model: {model_bytes / 1e6:.0f} MB "
        f"({'float32' if args.device == 'cpu' else 'bf16'}). Each run is llm-compressor's script as a job runs it, "
        "in its own process.",
        "",
        "| run | wall s | of the whole |",
        "|---|---|---|",
        f"| whole, no checkpoints | {whole_s:.1f} | 1.00x |",
        f"| whole, a checkpoint after every layer ({len(saves)}) | {saving_s:.1f} | {saving_s / whole_s:.2f}x |",
        f"| went on from the checkpoint after layer {middle['layers_done']} of {middle['layers']} (pass "
        f"{middle['pass']}) | {resumed_s:.1f} | {resumed_s / whole_s:.2f}x |",
        "",
        f"Writing the {len(saves)} checkpoints took {save_s:.2f} s in all (the script's own count). Each holds the "
        "layers done and the calibration activations that feed the next one; MB is what the worker uploads. Each "
        "layer's file is written to disk once and hard-linked into the later checkpoints.",
        f"The run that went on wrote {'the same bytes as' if identical else 'DIFFERENT bytes from'} the whole run.",
        "",
        "| checkpoint after layer | MB | write s |",
        "|---|---|---|",
        *[f"| {save['layers_done']} of {save['layers']} (pass {save['pass']}) | {save['bytes'] / 1e6:.1f} | "
          f"{save['seconds']:.2f} |" for save in saves],
    ]
    (RESULTS / f"{args.output}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
