#!/usr/bin/env bash
# On a GPU machine with no network, from the repository root, after benchmarks/gpu_carry.py packed
# .carry/: installs the carried wheels beside the machine's own stack, runs the gpu tests, then
# gpu_check.py. Everything it prints goes to $OUT (default ./gpu-out), written as it goes.
set -uo pipefail
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install --quiet --no-index --no-deps --target .carry/site .carry/wheels/*.whl 2>&1 | tail -5
export PYTHONPATH="$PWD/.carry/site:$PWD" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
{ nvidia-smi --query-gpu=name,memory.total,power.draw --format=csv; "$PYTHON" -c \
  "import torch, transformers, onnxruntime, torchao; print(torch.__version__, transformers.__version__, onnxruntime.__version__, torchao.__version__)"; } \
  > "$OUT/environment.txt" 2>&1
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout "${TESTS_TIMEOUT:-240}" "$PYTHON" -m pytest -m gpu tests/gpu -q -p no:cacheprovider -x \
    > "$OUT/gpu_tests.log" 2>&1
  echo "gpu tests: exit $?" | tee -a "$OUT/gpu_tests.log"
fi
timeout "${CHECK_TIMEOUT:-420}" "$PYTHON" benchmarks/gpu_check.py --model-dir .carry/minilm-fp16 --out "$OUT" "$@" \
  2> "$OUT/gpu_check.log"
echo "gpu_check: exit $?" | tee -a "$OUT/gpu_check.log"
tail -30 "$OUT/gpu_check.md" 2>/dev/null
