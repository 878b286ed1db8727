"""Packages the final model for the job's target and loads it back as its user would: an ONNX file
(or a .cpz that unpacks to one) for onnxruntime, a transformers folder for torch, or a .pte for
ExecuTorch.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import onnx
from transformers import PreTrainedTokenizerBase

from workers.engine.evaluation.runners import ExecutorchRunner, OnnxRunner, Runner, TorchRunner
from workers.engine.export.compact_storage import SparseStorageStats, store_sparse
from workers.engine.export.executorch import PTE_FILE, export_pte
from workers.engine.export.onnx import count_onnx_parameters, export_onnx
from workers.engine.export.transformers_folder import save_transformers_weights
from workers.engine.loading import load_shipped_model, model_input_names
from workers.engine.package import (
    MODEL_FILE,
    add_transformers_weights,
    build_package,
    build_compressed_package,
    build_executorch_package,
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
    sparse: SparseStorageStats | None  # None for a packed, torch or executorch result
    format: Literal["onnx", "cpz", "safetensors", "pte"]
    input_names: list[str] = field(default_factory=list)  # an ExecuTorch program's inputs, in order

    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.shipped_models)


def package_result(
    state: ModelState, target: Target, work_dir: Path, tokenizer: PreTrainedTokenizerBase, max_batch: int,
    max_length: int,
) -> Packaged:
    """`max_batch` and `max_length` bound an ExecuTorch program exported here (a recipe with no quantize step)."""
    package_dir = work_dir / "package"
    if target.runtime == "executorch":
        input_names = model_input_names(state.torch_model, tokenizer)
        pte = state.pte_path or export_pte(
            state.torch_model, state.task, input_names, work_dir / "export" / PTE_FILE,
            max_batch=max_batch, max_length=max_length,
        )
        files = build_executorch_package(pte, state.config_dir, package_dir, input_names)
        return Packaged(package_dir, files, [package_dir / PTE_FILE], package_dir / PTE_FILE, None, "pte", input_names)
    if target.runtime == "torch" and state.compressed_dir is not None:
        files = build_compressed_package(state.compressed_dir, package_dir)
        weights = [package_dir / item.path for item in files if item.path.endswith(".safetensors")]
        return Packaged(package_dir, files, weights, package_dir, None, "safetensors")
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
    if target.runtime == "executorch":
        return ExecutorchRunner(packaged.runnable_model, packaged.input_names, threads)
    if target.runtime == "torch":
        model = load_shipped_model(packaged.runnable_model, task, target.device)
        return TorchRunner(model, task, model_input_names(model, tokenizer), target.device)
    return OnnxRunner(packaged.runnable_model, target.device, threads=threads)


def result_parameters(runner: Runner, packaged: Packaged, state_parameters: int) -> int:
    """`state_parameters`: the final state's count, for a .pte (whose weights the runtime does not list)."""
    if packaged.format == "pte":
        return state_parameters
    if isinstance(runner, TorchRunner):
        return sum(parameter.numel() for parameter in runner.model.parameters())
    return count_onnx_parameters(onnx.load(str(packaged.runnable_model)))
