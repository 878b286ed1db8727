"""Maps each technique name to its versioned config class and the handler that applies it.

Registration is explicit (see `workers.engine.techniques`), so a broken technique fails loudly at
import instead of silently disappearing from the list.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from workers.engine.state import ModelState, StepContext

# "torch": an in-memory transformers model; "onnx": an ONNX file for onnxruntime; "packed": an
# entropy-coded .cpz container that `compresso unpack` turns back into the runnable ONNX folder;
# "compressed-tensors": a causal LM's quantized checkpoint folder (vLLM's format).
ModelFormat = Literal["torch", "onnx", "packed", "executorch", "compressed-tensors"]


class TechniqueConfig(BaseModel):
    """Params of one technique. Subclasses set the class vars and declare their params as fields."""

    # strict: "1" is not silently taken for 1, so a stored recipe means exactly what it says.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    technique: ClassVar[str]
    version: ClassVar[int]
    description: ClassVar[str]
    requires_data: ClassVar[bool] = False
    # What the step consumes and produces; the recipe checks that consecutive steps fit.
    input_format: ClassVar[ModelFormat] = "torch"
    output_format: ClassVar[ModelFormat] = "torch"
    # The task of the model a step returns, when it is not the task it was given (finetune: a classifier).
    output_task: ClassVar[str | None] = None
    # The step neither trains nor needs float32 arithmetic, so it takes a causal LM in the 16-bit dtype it was
    # uploaded in: a causal LM whose every step does is held that way, half the memory of a float32 copy.
    takes_stored_dtype: ClassVar[bool] = False

    # Every step can carry one; the worker enforces it (the engine never sees the clock).
    time_limit_seconds: float | None = Field(
        None,
        gt=0,
        le=7 * 24 * 3600,
        description="Soft time limit of this step: past it the job is stopped and ends timed_out (it is killed "
        "if it has not stopped a grace period later). Empty: the server's default for the technique, if any.",
    )


    def referenced_models(self) -> dict[str, str]:
        """Other uploaded models this step names, as {param: model id} (e.g. distill's student);
        the service checks they exist and the worker hands their folders to the step."""
        return {}

    def referenced_site_datasets(self) -> list[Any]:
        """Site-held datasets this step trains on (federated's sites, as SiteDataset entries); the service
        checks each site holds its dataset and the worker tells the sites where to find them."""
        return []


TechniqueHandler = Callable[[TechniqueConfig, "ModelState", "StepContext"], "ModelState"]


@dataclass(frozen=True)
class RegisteredTechnique:
    config_cls: type[TechniqueConfig]
    # The handler itself, or where it lives ("package.module:function"), imported on first use: the
    # API validates recipes with the configs alone, without importing torch (about 370 MB and seconds
    # of imports per API process, and a large heap whose garbage collections pause requests).
    handler_ref: TechniqueHandler | str

    @property
    def handler(self) -> TechniqueHandler:
        if not isinstance(self.handler_ref, str):
            return self.handler_ref
        module_name, _, function = self.handler_ref.partition(":")
        return getattr(importlib.import_module(module_name), function)


_REGISTRY: dict[str, RegisteredTechnique] = {}


def register_technique(config_cls: type[TechniqueConfig], handler: TechniqueHandler | str) -> None:
    name = getattr(config_cls, "technique", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{config_cls.__name__} must set the class var `technique`.")
    for attr in ("version", "description"):
        if not hasattr(config_cls, attr):
            raise TypeError(f"{config_cls.__name__} must set the class var `{attr}`.")
    existing = _REGISTRY.get(name)
    if existing is not None and existing.config_cls is not config_cls:
        raise ValueError(f"Technique {name!r} is already registered by {existing.config_cls.__name__}.")
    _REGISTRY[name] = RegisteredTechnique(config_cls=config_cls, handler_ref=handler)


def _ensure_builtin_techniques() -> None:
    # Importing the package runs its explicit registration list exactly once.
    import workers.engine.techniques  # noqa: F401


def get_technique(name: str) -> RegisteredTechnique:
    """Raises KeyError for an unknown name; `technique_names()` lists the known ones."""
    _ensure_builtin_techniques()
    return _REGISTRY[name]


def technique_names() -> list[str]:
    _ensure_builtin_techniques()
    return sorted(_REGISTRY)


def list_techniques() -> list[dict[str, Any]]:
    """What the API shows: each technique with the JSON schema of its params."""
    _ensure_builtin_techniques()
    return [
        {
            "name": name,
            "version": entry.config_cls.version,
            "description": entry.config_cls.description,
            "requires_data": entry.config_cls.requires_data,
            "input_format": entry.config_cls.input_format,
            "output_format": entry.config_cls.output_format,
            "params_schema": entry.config_cls.model_json_schema(),
        }
        for name, entry in sorted(_REGISTRY.items())
    ]
