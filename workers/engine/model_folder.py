"""Checks and describes a Hugging Face model folder without loading any weights.

Only safetensors weights are accepted: a pickle checkpoint can run code when unpickled, and
custom modelling code (`auto_map`, `*.py`) would need `trust_remote_code`, which is never used.
"""

import json
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from workers.engine.architectures.tasks import SUPPORTED_TASKS, task_for_architecture

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
CODE_SUFFIXES = (".py", ".pyc", ".so")
SAFETENSORS_HEADER_MAX_BYTES = 100 * 1024 * 1024

CONVERT_HINT = (
    "Convert it to safetensors first, for example: "
    "AutoModel.from_pretrained(folder).save_pretrained(out, safe_serialization=True), "
    "or use the 'convert' space of the safetensors project."
)


class ModelFolderError(ValueError):
    """The folder is not a model compresso accepts; the message says what to fix."""


@dataclass(frozen=True)
class ModelFolderInfo:
    architecture: str
    model_type: str
    task: str
    num_parameters: int
    size_bytes: int
    weight_files: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


# Bytes per element of each safetensors dtype, to check that the header describes the file.
SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}


def _tensor_problem(name: str, entry: object, data_bytes: int) -> str | None:
    """Why a header entry does not describe real bytes of this file, or None."""
    if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list):
        return f"tensor {name!r} has no shape"
    shape, offsets, dtype = entry["shape"], entry.get("data_offsets"), entry.get("dtype")
    if not all(isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape):
        return f"tensor {name!r} has a bad shape"
    if dtype not in SAFETENSORS_DTYPE_BYTES:
        return f"tensor {name!r} has an unknown dtype {dtype!r}"
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        return f"tensor {name!r} has no data offsets"
    begin, end = offsets
    count = 1
    for dim in shape:
        count *= dim
    if not 0 <= begin <= end <= data_bytes or end - begin != count * SAFETENSORS_DTYPE_BYTES[dtype]:
        # The file does not hold what the header declares (e.g. a terabyte in a few bytes): refused
        # here, from the header, before any loader maps or allocates it.
        return f"tensor {name!r} declares {count * SAFETENSORS_DTYPE_BYTES[dtype]:,} bytes that the file does not hold"
    return None


def safetensors_num_parameters(path: Path) -> int:
    """Counts the parameters of a safetensors file from its JSON header alone, after checking that
    every tensor the header declares lies within the file."""
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ModelFolderError(f"{path.name} is not a safetensors file: it is shorter than its header.")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > SAFETENSORS_HEADER_MAX_BYTES:
            raise ModelFolderError(f"{path.name} is not a valid safetensors file: its header is too large.")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFolderError(f"{path.name} is not a valid safetensors file: bad header.") from exc
    if not isinstance(header, dict):
        raise ModelFolderError(f"{path.name} is not a valid safetensors file: bad header.")
    data_bytes = path.stat().st_size - 8 - header_len
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        problem = _tensor_problem(name, entry, data_bytes)
        if problem is not None:
            raise ModelFolderError(f"{path.name} is not a valid safetensors file: {problem}.")
        count = 1
        for dim in entry["shape"]:
            count *= dim
        total += count
    return total


def inspect_model_folder(folder: Path) -> ModelFolderInfo:
    """Validates a model folder and describes it. Raises ModelFolderError with a fix-it message."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    relative = sorted(str(p.relative_to(folder)) for p in files)

    pickles = [name for name in relative if name.lower().endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise ModelFolderError(
            f"Pickle checkpoints are refused because loading them can run arbitrary code: {', '.join(pickles)}. "
            + CONVERT_HINT
        )
    code = [name for name in relative if name.lower().endswith(CODE_SUFFIXES)]
    if code:
        raise ModelFolderError(
            f"Custom model code is refused (trust_remote_code is never used): {', '.join(code)}. "
            "Upload a model whose architecture ships with transformers."
        )

    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelFolderError("config.json is missing at the top of the model folder.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"config.json is not valid JSON: {exc}.") from exc
    if not isinstance(config, dict):
        raise ModelFolderError("config.json must hold a JSON object.")
    if "auto_map" in config:
        raise ModelFolderError(
            "config.json has 'auto_map', which points at custom model code; trust_remote_code is never used. "
            "Upload a model whose architecture ships with transformers."
        )
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelFolderError("config.json has no 'model_type'.")
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or not architectures or not isinstance(architectures[0], str):
        raise ModelFolderError("config.json has no 'architectures' list naming the model class.")
    architecture = architectures[0]
    task = task_for_architecture(architecture)
    if task is None:
        raise ModelFolderError(
            f"Architecture {architecture!r} is not supported; supported tasks: {', '.join(SUPPORTED_TASKS)} "
            "(classes ending in Model, ForSequenceClassification, ForCausalLM or LMHeadModel)."
        )

    weights = sorted(p for p in files if p.suffix == ".safetensors")
    if not weights:
        raise ModelFolderError("No *.safetensors weights found. " + CONVERT_HINT)
    num_parameters = sum(safetensors_num_parameters(p) for p in weights)
    return ModelFolderInfo(
        architecture=architecture,
        model_type=model_type,
        task=task,
        num_parameters=num_parameters,
        size_bytes=sum(p.stat().st_size for p in files),
        weight_files=[str(p.relative_to(folder)) for p in weights],
    )
