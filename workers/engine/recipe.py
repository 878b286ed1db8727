"""A recipe: the ordered, strictly validated list of technique steps a job applies, with a JSON round trip.

Every problem is collected (not just the first) so a caller can show them all at once, each with
its location, e.g. ["recipe", "steps", 0, "params", "scheme"], and the allowed values where known.
"""

import enum
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from workers.engine.errors import EngineUserError
from workers.engine.recipe_rules import order_problems
from workers.engine.registry import ModelFormat, TechniqueConfig, get_technique, technique_names

RECIPE_KEYS = ["steps"]
STEP_KEYS = ["technique", "params", "version"]
ROOT = "recipe"
# Outputs no technique takes as input, so their step ends the recipe.
_FINAL_FORMATS = {"onnx": "an ONNX runtime file", "compressed-tensors": "a compressed-tensors checkpoint"}


class RecipeError(EngineUserError):
    """`errors` holds dicts {loc: list, msg: str, allowed: list | None}."""

    def __init__(self, errors: list[dict[str, Any]]):
        self.errors = errors
        super().__init__("; ".join(_describe(error) for error in errors))


def _describe(error: dict[str, Any]) -> str:
    text = f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
    if error.get("allowed") is not None:
        text += f" (allowed: {', '.join(repr(value) for value in error['allowed'])})"
    return text


def _error(loc: list, msg: str, allowed: list | None = None) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "allowed": allowed}


def _allowed_from_annotation(annotation: Any) -> list | None:
    """The finite set of values a field accepts (Literal, Enum, bool), or None when it is open-ended."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _allowed_from_annotation(typing.get_args(annotation)[0])
    if origin is Literal:
        return list(typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        values: list = []
        for arg in typing.get_args(annotation):
            if arg is type(None):
                values.append(None)
                continue
            inner = _allowed_from_annotation(arg)
            if inner is None:
                return None
            values.extend(inner)
        return values
    if origin in (list, tuple, set, frozenset):
        # A list of Literals: the allowed values are those of its items.
        args = [arg for arg in typing.get_args(annotation) if arg is not Ellipsis]
        return _allowed_from_annotation(args[0]) if len(args) == 1 else None
    if annotation is bool:
        return [True, False]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [member.value for member in annotation]
    return None


def _params_errors(config_cls: type[TechniqueConfig], exc: ValidationError, loc: list) -> list[dict[str, Any]]:
    errors = []
    fields = config_cls.model_fields
    for item in exc.errors():
        field = item["loc"][0] if item["loc"] else None
        if item["type"] == "extra_forbidden":
            msg = f"unknown param {field!r} for technique {config_cls.technique!r}"
            allowed = sorted(fields)
        else:
            # A config's own validator raises ValueError; pydantic prefixes its text with "Value error, ".
            msg = str(item["ctx"]["error"]) if item["type"] == "value_error" else item["msg"]
            allowed = _allowed_from_annotation(fields[field].annotation) if field in fields else None
        errors.append(_error([*loc, "params", *item["loc"]], msg, allowed))
    return errors


def _parse_step(raw: Any, loc: list) -> tuple[TechniqueConfig | None, list[dict[str, Any]]]:
    if not isinstance(raw, dict):
        return None, [_error(loc, "a step must be an object {technique, params}")]
    errors = [_error([*loc, key], "unknown field", STEP_KEYS) for key in raw if key not in STEP_KEYS]
    name = raw.get("technique")
    known = technique_names()
    if name not in known:
        msg = "missing technique" if name is None else f"unknown technique {name!r}"
        return None, [*errors, _error([*loc, "technique"], msg, known)]
    config_cls = get_technique(name).config_cls
    version = raw.get("version")
    if version is not None and version != config_cls.version:
        errors.append(
            _error([*loc, "version"], f"technique {name!r} is at version {config_cls.version}, not {version!r}",
                   [config_cls.version])
        )
    params = raw.get("params", {})
    if not isinstance(params, dict):
        return None, [*errors, _error([*loc, "params"], "params must be an object")]
    try:
        config = config_cls.model_validate(params)
    except ValidationError as exc:
        return None, [*errors, *_params_errors(config_cls, exc, loc)]
    return (None if errors else config), errors


def _format_errors(steps: list[TechniqueConfig]) -> list[dict[str, Any]]:
    """Each step must accept what the previous one produced; the chain starts from a torch model."""
    errors = []
    current: ModelFormat = "torch"
    producer: tuple[int, str] | None = None
    for index, step in enumerate(steps):
        if step.input_format != current:
            if current in _FINAL_FORMATS and producer is not None:
                msg = (
                    f"step {producer[0]} ({producer[1]!r}) outputs {_FINAL_FORMATS[current]}, so it must be the last "
                    f"step; {step.technique!r} works on a {step.input_format} model and cannot run after it"
                )
            else:
                msg = f"{step.technique!r} needs a {step.input_format} model, but the previous step gives {current}"
            errors.append(_error([ROOT, "steps", index, "technique"], msg))
        current = step.output_format
        producer = (index, step.technique)
    return errors


def _coherence_errors(steps: list[TechniqueConfig]) -> list[dict[str, Any]]:
    """Order rules first (they say why); a format mismatch is reported only where no rule explains it."""
    errors = [
        _error([ROOT, "steps", index, "technique"], msg)
        for index, msg in order_problems([step.technique for step in steps])
    ]
    explained = {tuple(error["loc"]) for error in errors}
    return errors + [error for error in _format_errors(steps) if tuple(error["loc"]) not in explained]


@dataclass(frozen=True)
class Recipe:
    steps: tuple[TechniqueConfig, ...]

    def __post_init__(self) -> None:
        if not self.steps:
            raise RecipeError([_error([ROOT, "steps"], "a recipe needs at least one step")])
        errors = _coherence_errors(list(self.steps))
        if errors:
            raise RecipeError(errors)

    @classmethod
    def from_dict(cls, data: Any) -> "Recipe":
        if not isinstance(data, dict):
            raise RecipeError([_error([ROOT], "a recipe must be an object {steps: [...]}")])
        errors = [_error([ROOT, key], "unknown field", RECIPE_KEYS) for key in data if key not in RECIPE_KEYS]
        raw_steps = data.get("steps")
        if not isinstance(raw_steps, list):
            raise RecipeError([*errors, _error([ROOT, "steps"], "steps must be a list of {technique, params}")])
        if not raw_steps:
            raise RecipeError([*errors, _error([ROOT, "steps"], "a recipe needs at least one step")])
        steps = []
        for index, raw in enumerate(raw_steps):
            config, step_errors = _parse_step(raw, [ROOT, "steps", index])
            errors.extend(step_errors)
            if config is not None:
                steps.append(config)
        if errors:
            raise RecipeError(errors)
        return cls(steps=tuple(steps))

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": [
                {"technique": step.technique, "version": step.version, "params": step.model_dump(mode="json")}
                for step in self.steps
            ]
        }

    def referenced_models(self) -> list[str]:
        return sorted({model_id for step in self.steps for model_id in step.referenced_models().values()})

    def referenced_site_datasets(self) -> list[tuple[int, Any]]:
        """(step index, SiteDataset) for every site-held dataset a federated step trains on."""
        return [
            (index, entry)
            for index, step in enumerate(self.steps)
            for entry in step.referenced_site_datasets()
        ]

    @property
    def requires_data(self) -> bool:
        return any(step.requires_data for step in self.steps)

    @property
    def takes_stored_dtype(self) -> bool:
        """Every step takes a causal LM in its uploaded 16-bit dtype (TechniqueConfig.takes_stored_dtype)."""
        return all(step.takes_stored_dtype for step in self.steps)
