"""Recipe and registry validation: errors name the field and the allowed values; JSON round trip."""

import json
import subprocess
import sys

import pytest

from workers.engine.presets import PRESETS
from workers.engine.recipe import Recipe, RecipeError
from workers.engine.registry import TechniqueConfig, list_techniques, register_technique
from workers.engine.techniques.quantize import QuantizeConfig

QUANTIZE = {"technique": "quantize", "params": {"scheme": "int8_dynamic"}}
SCHEMES = ("int8_dynamic", "int8_weight_only", "int4_weight_only", "int8_static", "fp16", "bf16", "fp8")


def errors_of(data) -> list[dict]:
    with pytest.raises(RecipeError) as caught:
        Recipe.from_dict(data)
    return caught.value.errors


def test_list_techniques_shows_quantize_with_its_params_schema():
    [quantize] = [item for item in list_techniques() if item["name"] == "quantize"]
    assert quantize["version"] == 1
    assert quantize["requires_data"] is True  # int8_static and target_fidelity calibrate on the texts
    assert quantize["description"]
    schema = quantize["params_schema"]
    assert schema["required"] == ["scheme"]
    assert schema["properties"]["scheme"]["enum"] == list(SCHEMES)
    assert schema["additionalProperties"] is False
    json.dumps(list_techniques())  # the API returns it as is


def test_registering_another_class_under_a_taken_name_is_refused():
    class Impostor(TechniqueConfig):
        technique = "quantize"
        version = 1
        description = "not the real one"

    with pytest.raises(ValueError, match="already registered"):
        register_technique(Impostor, lambda config, state, context: state)


def test_unknown_technique_lists_the_allowed_ones():
    [error] = errors_of({"steps": [{"technique": "shrink", "params": {}}]})
    assert error["loc"] == ["recipe", "steps", 0, "technique"]
    assert "shrink" in error["msg"]
    assert "quantize" in error["allowed"]


def test_unknown_param_names_the_field_and_the_known_params():
    [error] = errors_of({"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic", "bits": 4}}]})
    assert error["loc"] == ["recipe", "steps", 0, "params", "bits"]
    assert "per_channel" in error["allowed"] and "scheme" in error["allowed"]


def test_bad_scheme_lists_the_allowed_values():
    errors = errors_of({"steps": [{"technique": "quantize", "params": {"scheme": "int4"}}]})
    [error] = errors
    assert error["loc"] == ["recipe", "steps", 0, "params", "scheme"]
    assert error["allowed"] == list(SCHEMES) and "'int8_dynamic'" in error["msg"]
    assert "recipe.steps.0.params.scheme" in str(RecipeError(errors))


def test_missing_scheme_and_wrongly_typed_param_are_both_reported():
    errors = errors_of({"steps": [{"technique": "quantize", "params": {"per_channel": "yes"}}]})
    by_loc = {tuple(error["loc"]): error for error in errors}
    assert by_loc[("recipe", "steps", 0, "params", "scheme")]["allowed"] == list(SCHEMES)
    assert by_loc[("recipe", "steps", 0, "params", "per_channel")]["allowed"] == [True, False]


@pytest.mark.parametrize(
    "data, loc",
    [
        ({"steps": []}, ["recipe", "steps"]),
        ({}, ["recipe", "steps"]),
        ([QUANTIZE], ["recipe"]),
        ({"steps": [QUANTIZE], "name": "x"}, ["recipe", "name"]),
        ({"steps": [{**QUANTIZE, "extra": 1}]}, ["recipe", "steps", 0, "extra"]),
        ({"steps": ["quantize"]}, ["recipe", "steps", 0]),
        ({"steps": [{"technique": "quantize", "params": []}]}, ["recipe", "steps", 0, "params"]),
    ],
)
def test_malformed_recipes_point_at_the_problem(data, loc):
    assert errors_of(data)[0]["loc"] == loc


def test_a_step_after_an_onnx_producing_step_is_refused():
    [error] = errors_of({"steps": [QUANTIZE, QUANTIZE]})
    assert error["loc"] == ["recipe", "steps", 1, "technique"]
    assert "must be the last step" in error["msg"]


def test_constructing_an_invalid_recipe_in_python_is_refused_too():
    with pytest.raises(RecipeError, match="last step"):
        Recipe(steps=(QuantizeConfig(scheme="int8_dynamic"), QuantizeConfig(scheme="int8_dynamic")))


def test_json_round_trip_includes_versions_and_defaults():
    recipe = Recipe.from_dict({"steps": [QUANTIZE]})
    data = json.loads(json.dumps(recipe.to_dict()))
    [step] = data["steps"]
    assert (step["technique"], step["version"]) == ("quantize", 1)
    # Every default is written out, so a stored recipe keeps its meaning if a default changes.
    assert step["params"] == QuantizeConfig(scheme="int8_dynamic").model_dump(mode="json")
    assert step["params"]["per_channel"] is True and step["params"]["keep_fp32"] == []
    assert Recipe.from_dict(data) == recipe


def test_a_wrong_version_is_refused():
    [error] = errors_of({"steps": [{**QUANTIZE, "version": 2}]})
    assert error["loc"] == ["recipe", "steps", 0, "version"]
    assert error["allowed"] == [1]


def test_keep_fp32_lists_its_layer_groups():
    params = {"scheme": "int8_dynamic", "keep_fp32": ["ffn"]}
    [error] = errors_of({"steps": [{"technique": "quantize", "params": params}]})
    assert error["loc"] == ["recipe", "steps", 0, "params", "keep_fp32", 0]
    assert error["allowed"] == ["ffn_input", "ffn_output"]


def test_nan_and_infinity_are_refused_wherever_a_number_goes():
    for value in (float("nan"), float("inf")):
        for step in ({"technique": "low_rank", "params": {"energy": value}},
                     {"technique": "quantize", "params": {"scheme": "int8_dynamic", "time_limit_seconds": value}}):
            with pytest.raises(RecipeError) as caught:
                Recipe.from_dict({"steps": [step]})
            [error] = caught.value.errors
            assert error["loc"][:4] == ["recipe", "steps", 0, "params"], error


def test_order_rules_say_why_and_replace_the_format_message():
    from workers.engine.recipe_rules import order_problems

    [error] = errors_of({"steps": [QUANTIZE, {"technique": "low_rank", "params": {"energy": 0.9}}]})
    assert error["loc"] == ["recipe", "steps", 1, "technique"]
    assert "cannot come after step 0 ('quantize')" in error["msg"]
    # The rules are data over names, so they are checked here for techniques of any module.
    [(index, message)] = order_problems(["huffman"])
    assert index == 0 and "needs a cluster or quantize step before it" in message
    assert order_problems(["quantize", "huffman"]) == []
    assert order_problems(["cluster", "huffman"]) == []
    assert [index for index, _ in order_problems(["quantize", "prune"])] == [1]
    assert [index for index, _ in order_problems(["distill", "prune", "low_rank", "quantize", "huffman"])] == []
    assert [index for index, _ in order_problems(["cluster", "quantize"])] == [1]


def test_recipes_are_validated_without_importing_torch_or_onnx():
    """The API validates every recipe and lists the techniques with the configs alone: the handlers
    (torch, transformers, onnx) are imported only where a job runs."""
    script = """
import sys
from app.main import create_app
from workers.engine.presets import PRESETS
from workers.engine.recipe import Recipe
from workers.engine.registry import get_technique, list_techniques
create_app()
list_techniques()
for preset in PRESETS:
    Recipe.from_dict(preset.recipe)
heavy = sorted(name for name in ("torch", "transformers", "onnx", "onnxruntime") if name in sys.modules)
assert not heavy, heavy
get_technique("quantize").handler
assert "torch" in sys.modules and "onnxruntime" in sys.modules
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_stored_recipe_validates_again_for_every_scheme(scheme):
    # The API stores to_dict(), defaults included, and the engine validates that again: every scheme
    # must survive the round trip (per_channel's default once failed it for every non-int8 scheme).
    stored = Recipe.from_dict({"steps": [{"technique": "quantize", "params": {"scheme": scheme}}]}).to_dict()
    assert Recipe.from_dict(stored).to_dict() == stored
    if scheme in ("int8_dynamic", "int8_static"):
        return
    with pytest.raises(RecipeError, match="per_channel only applies"):  # a value meant for the scheme still is
        Recipe.from_dict({"steps": [{"technique": "quantize", "params": {"scheme": scheme, "per_channel": False}}]})


def test_every_preset_survives_the_round_trip():
    for preset in PRESETS:
        stored = Recipe.from_dict(preset.recipe).to_dict()
        assert Recipe.from_dict(stored).to_dict() == stored, preset.name
