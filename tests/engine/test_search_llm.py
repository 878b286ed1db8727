"""Goal jobs on causal LMs: the search tries llm_quantize points under a perplexity limit, measures each
candidate's perplexity on the search rows, and ships the smallest that meets the goal as a
compressed-tensors checkpoint; the parts that need no llm-compressor are checked without it."""

import pytest

from tests.engine.conftest import FAST_EVAL
from tests.factories import build_tiny_causal_lm
from workers.engine.errors import EngineUserError
from workers.engine.search.estimate import Workload, candidate_seconds, preflight, representative
from workers.engine.search.front import Measured, constraint_values, violations
from workers.engine.search.goal import LLM_FAMILIES, Goal, goal_task_problem
from workers.engine.search.space import CandidateSpec, family_problem, seed_points
from workers.engine.target import Target
from workers.engine.techniques.llm.handler import default_llm_python

TORCH_CPU = Target(runtime="torch", device="cpu")
EVAL = {**FAST_EVAL, "max_samples": 32, "latency_batch_sizes": [1, 4], "perplexity_max_tokens": 1024}
needs_llm_venv = pytest.mark.skipif(
    not default_llm_python().exists(), reason="no .venv-llm: run `make install` (it builds llm-compressor's venv)"
)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """Uploaded in bf16, as most LLM checkpoints are."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = build_tiny_causal_lm("llama", tmp_path_factory.mktemp("llama"))
    AutoModelForCausalLM.from_pretrained(folder).to(torch.bfloat16).save_pretrained(folder)
    return folder


def run_goal(model_dir, tmp_path, goal, target=TORCH_CPU):
    from workers.engine.pipeline import PipelineRequest, run_pipeline

    request = PipelineRequest(
        model_dir=model_dir, goal=goal, target=target.model_dump(), work_dir=tmp_path / "work",
        output_dir=tmp_path / "out", eval=EVAL,
    )
    return run_pipeline(request, lambda stage, fraction: None).report


@needs_llm_venv
def test_the_smallest_checkpoint_within_the_perplexity_limit_ships(llama, tmp_path):
    goal = {"max_perplexity_increase": 0.05, "objective": "smallest", "max_candidates": 3, "search_rows": 32,
            "families": ["llm_w4a16", "llm_w8a16"]}
    report = run_goal(llama, tmp_path, goal)
    search = report["search"]
    candidates = search["candidates"]
    # The cheap seed points, in order: 8-bit then 4-bit round-to-nearest, then the llm-w4a16 preset's GPTQ.
    assert [c["description"] for c in candidates] == [
        "llm_w8a16: algorithm rtn", "llm_w4a16: algorithm rtn, group 128", "llm_w4a16: algorithm gptq, group 128",
    ]
    original = search["original_perplexity"]
    assert original > 1
    for candidate in candidates:
        assert candidate["perplexity"] > 1
        assert candidate["perplexity_increase"] == pytest.approx(candidate["perplexity"] / original - 1)
        assert candidate["feasible"] == (candidate["perplexity_increase"] <= 0.05)
        assert candidate["recipe"]["steps"][0]["technique"] == "llm_quantize"
    w8, w4 = candidates[0], candidates[1]
    assert w4["size_bytes"] < w8["size_bytes"]
    chosen = next(c for c in candidates if c["chosen"])
    feasible = [c for c in candidates if c["feasible"]]
    if feasible:
        assert chosen["size_bytes"] == min(c["size_bytes"] for c in feasible)
    # What ships is that checkpoint, measured again on the held-out rows, with its perplexity.
    assert report["job"]["recipe"] == chosen["recipe"]
    assert report["result"]["size_bytes"] == chosen["size_bytes"]
    assert report["steps"][0]["format_after"] == "compressed-tensors"
    assert report["perplexity"]["dataset"]["tokens"] > 100
    assert set(search["preflight"]["family_seconds"]) == {"llm_w4a16", "llm_w8a16"}
    # llm-compressor read the upload's own folder: no candidate wrote a copy of the original. What the scheme
    # leaves unquantized ships in the upload's bf16.
    assert "llm_input" not in search["reused"]
    import zipfile

    from safetensors import safe_open

    with zipfile.ZipFile(tmp_path / "out" / "model.zip") as archive:
        archive.extract("model.safetensors", tmp_path / "shipped")
    with safe_open(tmp_path / "shipped" / "model.safetensors", "pt") as tensors:
        assert tensors.get_slice("lm_head.weight").get_dtype() == "BF16"


def test_a_causal_lm_goal_needs_the_torch_target(tmp_path):
    model = build_tiny_causal_lm("llama", tmp_path / "llama")
    with pytest.raises(EngineUserError, match="runtime torch"):
        run_goal(model, tmp_path, {"max_perplexity_increase": 0.01}, target=Target())


def test_perplexity_and_accuracy_limits_fit_their_kind_of_model():
    perplexity = Goal(max_perplexity_increase=0.01)
    assert goal_task_problem(perplexity, "text-generation") is None
    field, why = goal_task_problem(perplexity, "feature-extraction")
    assert field == "max_perplexity_increase" and "causal language model" in why
    field, why = goal_task_problem(Goal(max_accuracy_drop=0.01), "text-generation")
    assert field == "max_accuracy_drop" and "max_perplexity_increase" in why
    # A perplexity limit is a quality floor; without one a smallest goal is refused.
    with pytest.raises(ValueError, match="max_perplexity_increase for a causal LM"):
        Goal(objective="smallest")


def test_families_follow_the_task_and_the_target():
    assert Goal(min_fidelity=0.9).allowed_families("text-generation") == LLM_FAMILIES
    assert not set(LLM_FAMILIES) & set(Goal(min_fidelity=0.9).allowed_families("feature-extraction"))
    assert family_problem("llm_w4a16", TORCH_CPU, "text-generation") is None
    assert "runtime torch" in family_problem("llm_w4a16", Target(), "text-generation")
    assert "causal language models" in family_problem("llm_fp8", TORCH_CPU, "feature-extraction")
    assert "llm_*" in family_problem("int8", TORCH_CPU, "text-generation")
    seeds = seed_points(Goal(max_perplexity_increase=0.01), list(LLM_FAMILIES), TORCH_CPU)
    assert [seed["family"] for seed in seeds] == ["llm_w8a16", "llm_w4a16", "llm_w4a16", "llm_fp8"]


def _measured(perplexity, increase):
    spec = CandidateSpec("llm_w4a16", {}, {"steps": []})
    return Measured(number=1, spec=spec, size_bytes=100, size_ratio=0.5, fidelity=0.9,
                    fidelity_metric="token_top1_agreement", latency_ms=1.0, accuracy=None, accuracy_drop=None,
                    kwh_per_1000=None, job_kwh=None, wall_time_s=1.0, estimated_s=1.0, perplexity=perplexity,
                    perplexity_increase=increase)


def test_a_perplexity_limit_is_met_or_broken_in_shares_of_the_original():
    relative = Goal(max_perplexity_increase=0.01)
    assert constraint_values(relative, _measured(101.0, 0.01)) == {"max_perplexity_increase": 0.0}
    assert violations(relative, _measured(103.0, 0.03)) == {"max_perplexity_increase": pytest.approx(0.02)}
    # Points: 3 over an original of 100 with a limit of 1 is 2 points past it, 2% of the original.
    points = Goal(max_perplexity_increase=1.0, perplexity_increase_is="absolute")
    assert violations(points, _measured(103.0, 3.0)) == {"max_perplexity_increase": pytest.approx(0.02)}
    assert not violations(points, _measured(100.5, 0.5))


def test_llm_estimates_rank_the_algorithms_and_count_the_perplexity_passes():
    # A 32M-parameter LM measured at 20 ms per padded row on 2 cores.
    work = Workload(num_parameters=32_000_000, weight_bytes=128_000_000, search_rows=256, eval_rows=256,
                    seconds_per_row=0.02, search_perplexity_rows=60.0, perplexity_rows=200.0)
    goal = Goal(max_perplexity_increase=0.01)

    def seconds(params):
        spec = CandidateSpec("llm_w4a16", {}, {"steps": [{"technique": "llm_quantize", "params": params}]})
        return candidate_seconds(spec, work, (1,))

    rtn, gptq, awq = (seconds({"scheme": "w4a16", "algorithm": name}) for name in ("rtn", "gptq", "awq"))
    assert rtn < gptq < awq
    assert seconds({"scheme": "fp8", "sparsity": "2:4"}) > seconds({"scheme": "fp8"})
    fewer_rows = Workload(**{**work.__dict__, "search_perplexity_rows": 0.0})
    w4 = representative("llm_w4a16", goal, TORCH_CPU)
    assert candidate_seconds(w4, work, (1,)) > candidate_seconds(w4, fewer_rows, (1,))
    plan = preflight(goal, work, TORCH_CPU, (1,), "text-generation")
    assert set(plan.family_seconds) == set(LLM_FAMILIES) and not plan.problems
    refused = preflight(goal, work, Target(), (1,), "text-generation")
    assert refused.problems and "runtime torch" in refused.problems[0]


def test_with_nothing_feasible_equal_shortfalls_go_to_the_more_faithful():
    from workers.engine.search.front import choose

    goal = Goal(max_perplexity_increase=0.01, max_size_ratio=0.05)
    rounded, calibrated = _measured(101.0, 0.01), _measured(100.1, 0.001)
    rounded.number, calibrated.number = 1, 2
    calibrated.fidelity = 0.98
    for candidate in (rounded, calibrated):
        candidate.violations = violations(goal, candidate)
    assert rounded.violations == calibrated.violations == {"max_size_ratio": pytest.approx(9.0)}
    assert choose(goal, [rounded, calibrated], None) is calibrated
