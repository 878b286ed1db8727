"""Builds the downloadable package: model.onnx, the tokenizer and config files, report.json, the
README.md model card, and a deterministic zip of them (sorted entries, fixed timestamps), so equal
inputs give equal archives.
"""

import shutil
import zipfile
from pathlib import Path

import onnx

from workers.engine.model_files import CONFIG_FILES, TOKENIZER_FILES
from workers.engine.packing.cpz import unpack_cpz
from workers.engine.report import PackageFile

MODEL_FILE = "model.onnx"
REPORT_FILE = "report.json"
MODEL_CARD_FILE = "README.md"
# Written after the result is measured (they describe it), so not counted in its size.
_DOCUMENT_FILES = (REPORT_FILE, MODEL_CARD_FILE)
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _copy_companions(config_dir: Path, package_dir: Path, config_names) -> list[PackageFile]:  # noqa: ANN001
    """Copies the tokenizer files and the named config files (of CONFIG_FILES) that `config_dir` holds."""
    files = []
    for name in TOKENIZER_FILES:
        if (config_dir / name).is_file():
            shutil.copyfile(config_dir / name, package_dir / name)
            files.append(PackageFile(path=name, runtime="any", description="Tokenizer file (transformers/tokenizers)."))
    for name in config_names:
        if (config_dir / name).is_file():
            shutil.copyfile(config_dir / name, package_dir / name)
            files.append(PackageFile(path=name, runtime="any", description=CONFIG_FILES[name]))
    return files


def _weight_files(folder: Path) -> list[str]:
    """The safetensors files of a transformers folder, shards and their index included, by name."""
    return sorted(
        path.name for path in folder.iterdir()
        if path.suffix == ".safetensors" or path.name.endswith(".safetensors.index.json")
    )


def _document_files() -> list[PackageFile]:
    return [
        PackageFile(path=REPORT_FILE, runtime="any", description="This report: measurements and provenance."),
        PackageFile(path=MODEL_CARD_FILE, runtime="any", description="Hugging Face Hub model card, from this report."),
    ]


def build_package(onnx_path: Path, config_dir: Path, package_dir: Path) -> list[PackageFile]:
    """Copies the model and its companion files into `package_dir`; report.json and README.md are
    written once the report is final, but listed here."""
    shutil.rmtree(package_dir, ignore_errors=True)
    package_dir.mkdir(parents=True)
    # Saving through onnx folds any external-data file back in: the package promises one file.
    model = onnx.load(str(onnx_path))
    onnx.save_model(model, str(package_dir / MODEL_FILE), save_as_external_data=False)
    files = [PackageFile(path=MODEL_FILE, runtime="onnxruntime", description="The compressed model (ONNX, opset 17).")]
    files += _copy_companions(config_dir, package_dir, CONFIG_FILES)
    return sorted([*files, *_document_files()], key=lambda item: item.path)


def build_packed_package(cpz_path: Path, package_dir: Path, unpack_dir: Path) -> tuple[list[PackageFile], Path]:
    """A packed result ships only its .cpz (plus the report and card); it is unpacked here exactly as
    a user would (`compresso unpack`), and the returned model.onnx is what gets measured."""
    shutil.rmtree(package_dir, ignore_errors=True)
    package_dir.mkdir(parents=True)
    shipped = package_dir / cpz_path.name
    shutil.copyfile(cpz_path, shipped)
    shutil.rmtree(unpack_dir, ignore_errors=True)
    unpack_cpz(shipped, unpack_dir)
    files = [
        PackageFile(
            path=shipped.name,
            runtime="compresso unpack",
            description="model.onnx, config and tokenizer files, entropy-coded; `compresso unpack "
            f"{shipped.name} DIR` restores them bit for bit as a folder onnxruntime runs.",
        ),
        *_document_files(),
    ]
    return sorted(files, key=lambda item: item.path), unpack_dir / MODEL_FILE


def add_transformers_weights(files: list[PackageFile], package_dir: Path) -> list[PackageFile]:
    """Lists the transformers form of a torch result, written into the package beside model.onnx."""
    extra = [
        PackageFile(
            path="model.safetensors",
            runtime="transformers",
            description="The same model as transformers weights: AutoModel*.from_pretrained(folder) loads it, or "
            "compresso's loader (workers.engine.pruned_model) where pruned_shapes.json is present.",
        )
    ]
    return sorted([*files, *extra], key=lambda item: item.path)


def package_size_bytes(package_dir: Path) -> int:
    """Every shipped file but the documents (a packed package: just the .cpz)."""
    return sum(
        path.stat().st_size for path in package_dir.iterdir() if path.is_file() and path.name not in _DOCUMENT_FILES
    )


def write_zip(package_dir: Path, zip_path: Path) -> Path:
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    partial = zip_path.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(package_dir.iterdir()):
            if not path.is_file():
                continue
            info = zipfile.ZipInfo(path.name, date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with path.open("rb") as source, archive.open(info, "w") as target:
                shutil.copyfileobj(source, target, 1024 * 1024)
    # Renamed only when complete, so a reader never sees a half-written archive.
    partial.replace(zip_path)
    return zip_path


def build_torch_package(model, config_dir: Path, package_dir: Path) -> list[PackageFile]:
    """A torch target's package: the transformers folder (safetensors weights and the config.json
    that describes them, quantization_config included) plus the tokenizer files."""
    shutil.rmtree(package_dir, ignore_errors=True)
    model.save_pretrained(package_dir, safe_serialization=True)
    weights = _weight_files(package_dir)
    if not weights:
        raise RuntimeError("save_pretrained wrote no safetensors file; refusing to ship an empty folder.")
    quantized = getattr(model.config, "quantization_config", None) is not None
    files = [
        PackageFile(
            path=name,
            runtime="transformers",
            description="The compressed model's weights: AutoModel*.from_pretrained(folder) loads them"
            + (" (torchao must be installed: config.json names its quantization)." if quantized else "."),
        )
        for name in weights
    ]
    files.append(PackageFile(path="config.json", runtime="any", description=CONFIG_FILES["config.json"]))
    # config.json (and generation_config.json) come from save_pretrained: they describe these weights.
    files += _copy_companions(config_dir, package_dir, ())
    if (package_dir / "generation_config.json").is_file():
        files.append(PackageFile(
            path="generation_config.json", runtime="any", description=CONFIG_FILES["generation_config.json"]
        ))
    return sorted([*files, *_document_files()], key=lambda item: item.path)


def build_compressed_package(compressed_dir: Path, package_dir: Path) -> list[PackageFile]:
    """A causal LM's compressed-tensors checkpoint as llm-compressor wrote it: safetensors shards, the
    config.json whose quantization_config vLLM and transformers read, the tokenizer, and recipe.yaml."""
    shutil.rmtree(package_dir, ignore_errors=True)
    package_dir.mkdir(parents=True)
    weights = _weight_files(compressed_dir)
    if not weights:
        raise RuntimeError("The compressed-tensors folder holds no safetensors file; refusing to ship it.")
    files = []
    for name in weights:
        shutil.copyfile(compressed_dir / name, package_dir / name)
        files.append(PackageFile(
            path=name, runtime="transformers",
            description="Compressed-tensors weights: vLLM loads the folder natively; AutoModelForCausalLM."
            "from_pretrained(folder) reloads it with compressed-tensors installed.",
        ))
    if (compressed_dir / "recipe.yaml").is_file():
        shutil.copyfile(compressed_dir / "recipe.yaml", package_dir / "recipe.yaml")
        files.append(PackageFile(
            path="recipe.yaml", runtime="any", description="llm-compressor's recipe that produced these weights."
        ))
    files += _copy_companions(compressed_dir, package_dir, ("config.json", "generation_config.json"))
    return sorted([*files, *_document_files()], key=lambda item: item.path)


def build_executorch_package(
    pte_path: Path, config_dir: Path, package_dir: Path, input_names: list[str]
) -> list[PackageFile]:
    """An executorch target's package: the .pte program, config.json (the label names of a
    classifier) and the tokenizer files."""
    shutil.rmtree(package_dir, ignore_errors=True)
    package_dir.mkdir(parents=True)
    shutil.copyfile(pte_path, package_dir / pte_path.name)
    files = [PackageFile(
        path=pte_path.name, runtime="executorch",
        description="The compressed model as an ExecuTorch program (XNNPACK kernels): "
        f"executorch.runtime's load_method('forward').execute([{', '.join(input_names)}]) as int64 tensors.",
    )]
    files += _copy_companions(config_dir, package_dir, ("config.json",))
    return sorted([*files, *_document_files()], key=lambda item: item.path)
