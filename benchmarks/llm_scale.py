"""How llm_quantize's time and memory grow with the model: random-initialised Llama-3 shapes (1B, 3B, 8B)
quantized by the same llm-compressor script a job runs, for time and memory only (random weights have
no quality to measure). Meant for a GPU machine; `--sizes tiny --device cpu` rehearses it here.

For each size it writes a bf16 checkpoint (sharded, as uploads are), a word-level tokenizer whose
vocabulary is the model's, and calibration texts of random tokens of the full sequence length, then
runs workers/engine/techniques/llm/oneshot_script.py under `--python` and records:
- the quantizing process's wall time, time per layer and per billion parameters;
- its peak GPU memory (torch's allocator) and peak RSS;
- the checkpoint's bytes against bf16.

    python benchmarks/llm_scale.py --sizes 1b,3b,8b --samples 128 --sequence 2048 --out DIR

Writes DIR/llm_scale.json after every size, so a run cut short keeps what it measured.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from workers.engine.techniques.llm.config import LlmQuantizeConfig  # noqa: E402
from workers.engine.techniques.llm.handler import SCRIPT, script_spec  # noqa: E402

# Llama 3.2 1B and 3B, Llama 3.1 8B (hidden, layers, FFN, heads, KV heads, vocabulary); tiny rehearses the script.
SHAPES = {
    "tiny": (256, 4, 512, 8, 4, 32000),
    "small": (1024, 8, 2816, 16, 4, 32000),  # about 160M parameters: what two CPU cores quantize in minutes
    "1b": (2048, 16, 8192, 32, 8, 128256),
    "3b": (3072, 28, 8192, 24, 8, 128256),
    "8b": (4096, 32, 14336, 32, 8, 128256),
}


def write_model(size: str, folder: Path, dtype: str = "bfloat16") -> int:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    hidden, layers, ffn, heads, kv_heads, vocab = SHAPES[size]
    config = LlamaConfig(
        hidden_size=hidden, num_hidden_layers=layers, intermediate_size=ffn, num_attention_heads=heads,
        num_key_value_heads=kv_heads, vocab_size=vocab, max_position_embeddings=8192, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="2GB")
    del model
    words = {f"t{index}": index for index in range(vocab)}
    tokenizer = Tokenizer(models.WordLevel(vocab=words, unk_token="t2"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="t0", eos_token="t1", pad_token="t1").save_pretrained(folder)
    return parameters


def write_calibration(path: Path, samples: int, sequence: int, vocab: int) -> None:
    rng = random.Random(0)
    lines = [json.dumps({"text": " ".join(f"t{rng.randrange(3, vocab)}" for _ in range(sequence - 1))})
             for _ in range(samples)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_size(size: str, args: argparse.Namespace, scratch: Path) -> dict:
    model_dir, output_dir = scratch / f"{size}-bf16", scratch / f"{size}-out"
    started = time.perf_counter()
    parameters = write_model(size, model_dir)
    write_calibration(scratch / "calibration.jsonl", args.samples, args.sequence, SHAPES[size][5])
    prepare_s = time.perf_counter() - started
    config = LlmQuantizeConfig(scheme=args.scheme, algorithm=args.algorithm)
    spec = script_spec(config, model_dir, output_dir, scratch / "calibration.jsonl", args.sequence)
    (scratch / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if args.device == "cpu" else {}))
    started = time.perf_counter()
    done = subprocess.run(
        [args.python, str(SCRIPT), str(scratch / "spec.json")], capture_output=True, text=True, env=env, check=False
    )
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        return {"size": size, "parameters": parameters, "error": done.stderr[-2000:]}
    events = [json.loads(line) for line in done.stdout.splitlines()]
    layers = [event for event in events if event["event"] == "layer"]
    final = events[-1]
    per_layer = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(layers, layers[1:], strict=False) if b["index"] > a["index"]]
    bf16_bytes = sum(path.stat().st_size for path in model_dir.glob("*.safetensors"))
    out_bytes = sum(path.stat().st_size for path in output_dir.glob("*.safetensors"))
    return {
        "size": size, "parameters": parameters, "prepare_s": round(prepare_s, 1), "wall_s": round(wall_s, 1),
        "quantize_s": final["quantize_s"], "s_per_billion": round(final["quantize_s"] / (parameters / 1e9), 1),
        "layer_s_median": round(sorted(per_layer)[len(per_layer) // 2], 2) if per_layer else None,
        "peak_gpu_gb": None if final["peak_gpu_memory_mb"] is None else round(final["peak_gpu_memory_mb"] / 1024, 2),
        "peak_rss_gb": round(final["peak_rss_mb"] / 1024, 2), "bf16_gb": round(bf16_bytes / 1e9, 2),
        "size_vs_bf16": round(out_bytes / bf16_bytes, 3), "device": final["device"], "versions": final["versions"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1b,3b,8b", help=f"Comma-separated: {', '.join(SHAPES)}")
    parser.add_argument("--scheme", default="w4a16")
    parser.add_argument("--algorithm", default="gptq")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--sequence", type=int, default=2048)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--python", default=sys.executable, help="The interpreter that has llmcompressor.")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes.split(","):
        with tempfile.TemporaryDirectory() as scratch:
            rows.append(run_size(size, args, Path(scratch)))
        print(json.dumps(rows[-1]), flush=True)
        (args.out / "llm_scale.json").write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows},
                                                            indent=2, default=str) + "\n")
    print("| size | parameters | quantize s | s per 1B params | median s per layer | peak GPU GB | peak RSS GB | "
          "bytes vs bf16 |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['size']} | {row['parameters'] / 1e9:.2f}B | failed: {row['error'][-200:]!r} |")
            continue
        print(f"| {row['size']} | {row['parameters'] / 1e9:.2f}B | {row['quantize_s']:.1f} | {row['s_per_billion']} | "
              f"{row['layer_s_median']} | {row['peak_gpu_gb']} | {row['peak_rss_gb']} | {row['size_vs_bf16']}x |")


if __name__ == "__main__":
    main()
