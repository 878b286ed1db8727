"""Packages the final model for the job's target and loads it back as its user would: an ONNX file
(or a .cpz that unpacks to one) for onnxruntime, or a transformers folder for torch.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnx
from transformers import PreTrainedTokenizerBase

from workers.engine.evaluation.runners import OnnxRunner, Runner, TorchRunner
from workers.engine.export.compact_storage import SparseStorageStats, store_sparse
from workers.engine.export.onnx import count_onnx_parameters, export_onnx
from workers.engine.export.transformers_folder import save_transformers_weights
from workers.engine.loading import load_shipped_model, model_input_names
from workers.engine.package import (
    MODEL_FILE,
    add_transformers_weights,
    build_package,
    build_packed_package,
    build_torch_package,
)
from workers.engine.report import PackageFile
from workers.engine.state import ModelState
from workers.engine.target import Target


@dataclass(frozen=True)
class Packaged:
    package_dir: Path
    files: list[PackageFile]
    shipped_models: list[Path]  # the files the result's size is: model.onnx, the .cpz, or the safetensors
    runnable_model: Path  # what is measured: model.onnx (unpacked from a .cpz), or the transformers folder
    sparse: SparseStorageStats | None  # None for a packed or torch result
    format: Literal["onnx", "cpz", "safetensors"]

    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.shipped_models)


def package_result(state: ModelState, target: Target, work_dir: Path, tokenizer: PreTrainedTokenizerBase) -> Packaged:
    package_dir = work_dir / "package"
    if target.runtime == "torch":
        files = build_torch_package(state.torch_model, state.config_dir, package_dir)
        weights = [package_dir / item.path for item in files if item.path.endswith(".safetensors")]
        return Packaged(package_dir, files, weights, package_dir, None, "safetensors")
    if state.packed_path is not None:
        files, runnable = build_packed_package(state.packed_path, package_dir, work_dir / "unpacked")
        return Packaged(package_dir, files, [package_dir / state.packed_path.name], runnable, None, "cpz")
    torch_model = state.torch_model if state.format == "torch" else None
    onnx_path = state.onnx_path
    if onnx_path is None:
        # A recipe of torch-only steps still ships a runtime file: export the result as it is.
        onnx_path = work_dir / "export" / "model_dense.onnx"
        export_onnx(state.torch_model, state.task, model_input_names(state.torch_model, tokenizer), onnx_path)
    # Pruned weights are zeros in dense tensors; a bitmask plus the nonzero values makes the file
    # really smaller (a copy when nothing gains).
    sparse_path = work_dir / "export" / MODEL_FILE
    sparse = store_sparse(onnx_path, sparse_path)
    files = build_package(sparse_path, state.config_dir, package_dir)
    if torch_model is not None:
        weights = save_transformers_weights(torch_model, state.task, state.config_dir, package_dir)
        if weights is not None:
            files = add_transformers_weights(files, package_dir)
    return Packaged(package_dir, files, [package_dir / MODEL_FILE], package_dir / MODEL_FILE, sparse, "onnx")


def result_runner_for(
    packaged: Packaged, target: Target, task: str, tokenizer: PreTrainedTokenizerBase, threads: int
) -> Runner:
    """The shipped result, loaded as its user would load it, on the target's runtime and device."""
    if target.runtime == "torch":
        model = load_shipped_model(packaged.runnable_model, task, target.device)
        return TorchRunner(model, task, model_input_names(model, tokenizer), target.device)
    return OnnxRunner(packaged.runnable_model, target.device, threads=threads)


def result_parameters(runner: Runner, packaged: Packaged) -> int:
    if isinstance(runner, TorchRunner):
        return sum(parameter.numel() for parameter in runner.model.parameters())
    return count_onnx_parameters(onnx.load(str(packaged.runnable_model)))
