"""Runs llm-compressor's oneshot on one causal LM folder; executed by the isolated interpreter of
.venv-llm (requirements-llm.txt), never imported by the service.

llm-compressor is the maintained implementation of GPTQ, AWQ, SmoothQuant, SparseGPT and fp8 KV-cache
calibration, with sequential onloading (one decoder layer on the GPU at a time). It pins transformers
and compressed-tensors releases older than the service's, so it runs here, in its own environment,
on a folder the engine wrote, and writes a compressed-tensors folder back.

    python oneshot_script.py spec.json

stdout: JSON lines, {"event": "layer", "index": k, "total": n, "resumed": ..., "elapsed_s": ...} as each
layer is calibrated; {"event": "layer_checkpoint", "path": ..., "pass": p, "layers_done": k, ...} as a
checkpoint between layers is written (spec "layer_checkpoints": {"dir", "interval_s"}) and
{"event": "layers_resumed", ...} once one is put back in place (spec "resume_layers"), see
oneshot_layers.py; then {"event": "done", ...}. Everything else goes to stderr.
"""

import json
import os
import re
import sys
import time
from pathlib import Path

_EVENTS = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # libraries' prints go to stderr; stdout carries only our events


def _peak_rss_mb() -> float:
    """This process's high-water mark (VmHWM). Not getrusage's ru_maxrss, which starts at the engine's own
    mark when it forks this process, so the engine's memory was reported as llm-compressor's. (The engine's
    workers.engine.memory does the same; this script imports nothing of the engine.)"""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _emit(event: dict) -> None:
    _EVENTS.write(json.dumps(event) + "\n")
    _EVENTS.flush()


def _follow_layers(model, spec: dict, started: float) -> None:
    """Emits an event as each subgraph (decoder layer) starts calibrating, for progress and per-layer time,
    and saves and resumes layer checkpoints (oneshot_layers.py). llm-compressor has no callback for this;
    if a release renames what is wrapped, progress is coarser and a checkpoint neither saved nor resumed."""
    from oneshot_layers import LayerCheckpoints

    try:
        from llmcompressor.core import LifecycleCallbacks
        from llmcompressor.pipelines.sequential import pipeline as sequential
    except ImportError:
        sequential = None
    if sequential is None or not hasattr(sequential, "_get_batches"):
        if spec.get("resume_layers"):
            raise RuntimeError("this llm-compressor release cannot resume from a layer checkpoint")
        return

    def on_layer(index: int, total: int, resumed: bool) -> None:
        _emit({"event": "layer", "index": index, "total": total, "resumed": resumed,
               "elapsed_s": round(time.perf_counter() - started, 3)})

    LayerCheckpoints(model, spec, _emit).install(sequential, LifecycleCallbacks, on_layer)


def _no_pinning_without_accelerator() -> None:
    """AWQ pins its cached activations to speed up host-to-GPU copies (llmcompressor 0.14,
    `IntermediatesCache.pin_memory`), and pinning raises on a machine with no accelerator. With no
    GPU there is no copy to speed up, so pinning is skipped there; on a GPU nothing changes."""
    import torch

    if torch.cuda.is_available():
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None


def _kept_layers(model, patterns: list[str]) -> list[str]:
    import torch

    compiled = [re.compile(pattern) for pattern in patterns]
    return [
        name for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and any(pattern.search(name) for pattern in compiled)
    ]


def _weight_scheme(spec: dict):
    """The weights' scheme: a compressed-tensors preset name, or a config group for a custom group size."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    scheme = spec["scheme"]
    if scheme == "w4a16":
        # Symmetric for AWQ too: the asymmetric grid's packed zero points that compressed-tensors 0.19
        # (here) writes do not reload under 0.20 (the service's), a shape mismatch at from_pretrained.
        weights = QuantizationArgs(
            num_bits=4, type="int", symmetric=True, strategy="group", group_size=spec["group_size"],
            actorder="static" if spec["algorithm"] == "gptq" and spec["activation_order"] else None,
        )
        return {"config_groups": {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}}
    preset = {"w8a16": "W8A16", "w8a8": "W8A8", "fp8": "FP8_DYNAMIC"}[scheme]
    return {"scheme": preset, "targets": ["Linear"]}


def _modifiers(spec: dict, ignore: list[str]) -> list:
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier

    modifiers = []
    if spec["sparsity"] == "2:4":
        from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier

        modifiers.append(SparseGPTModifier(sparsity=0.5, mask_structure="2:4", targets=["Linear"], ignore=ignore))
    if spec["smoothing_strength"] > 0:
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

        modifiers.append(SmoothQuantModifier(smoothing_strength=spec["smoothing_strength"]))
    kv_cache = None
    if spec["kv_cache"] == "fp8":
        kv_cache = {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True}
    scheme = _weight_scheme(spec)
    if spec["algorithm"] == "awq":
        from llmcompressor.modifiers.transform.awq import AWQModifier

        # AWQ only rescales channels for the quantization that follows; it quantizes nothing itself.
        modifiers.append(AWQModifier())
        modifiers.append(QuantizationModifier(ignore=ignore, kv_cache_scheme=kv_cache, **scheme))
    elif spec["algorithm"] == "gptq":
        if spec["scheme"] != "w4a16" and spec["activation_order"]:
            scheme["actorder"] = "static"
        modifiers.append(GPTQModifier(ignore=ignore, kv_cache_scheme=kv_cache, **scheme))
    else:
        modifiers.append(QuantizationModifier(ignore=ignore, kv_cache_scheme=kv_cache, **scheme))
    return modifiers


def _calibration_dataset(spec: dict, tokenizer):
    from datasets import Dataset

    texts = [json.loads(line)["text"] for line in Path(spec["calibration_file"]).read_text(encoding="utf-8").splitlines()]
    encoded = tokenizer(texts, truncation=True, max_length=spec["max_sequence_length"], add_special_tokens=True)
    return Dataset.from_dict({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}), len(texts)


def main(spec_path: str) -> None:
    started = time.perf_counter()
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    import torch
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    ignore = _kept_layers(model, spec["keep"])
    modifiers = _modifiers(spec, ignore)
    needs_data = spec["algorithm"] != "rtn" or spec["sparsity"] != "none" or spec["smoothing_strength"] > 0 \
        or spec["kv_cache"] != "none"
    kwargs = {}
    samples = 0
    if needs_data:
        dataset, samples = _calibration_dataset(spec, tokenizer)
        kwargs = {"dataset": dataset, "num_calibration_samples": samples, "max_seq_length": spec["max_sequence_length"]}
    _follow_layers(model, spec, started)
    _no_pinning_without_accelerator()
    oneshot(model=model, recipe=modifiers, shuffle_calibration_samples=False, **kwargs)
    quantize_s = time.perf_counter() - started
    if spec.get("probe_ids"):
        # The fake-quantized model's logits before compression, for a check that the saved folder
        # reloads elsewhere to the same model (tests compare them with the reloaded model's).
        import numpy as np

        with torch.no_grad():
            logits = model(input_ids=torch.tensor(spec["probe_ids"], device=model.device)).logits
        np.save(spec["probe_output"], logits.float().cpu().numpy())
    output = Path(spec["output_dir"])
    model.save_pretrained(output, save_compressed=True)
    tokenizer.save_pretrained(output)
    _emit({
        "event": "done",
        "kept_layers": ignore,
        "calibration_samples": samples,
        "quantize_s": round(quantize_s, 3),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "peak_rss_mb": _peak_rss_mb(),
        "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "versions": {name: _version(name) for name in ("llmcompressor", "compressed-tensors", "transformers", "torch")},
    })


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main(sys.argv[1])
