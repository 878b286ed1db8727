"""Runs a job end to end: load and measure the original, apply the recipe's steps, package the
result, then measure the packaged file itself, so the report describes exactly what is shipped.
"""

import gc
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from workers.engine.checkpoints.recipe_run import run_recipe_steps
from workers.engine.devices import GpuMemoryPeak
from workers.engine.energy.generation import GenerationEnergyProbe
from workers.engine.energy.inference import InferenceProbe
from workers.engine.energy.meter import EnergyMeter, open_meter
from workers.engine.energy.payback import payback_section
from workers.engine.errors import EngineUserError
from workers.engine.footprint.sections import footprint_sections
from workers.engine.evaluation.data import EvalDataset, load_eval_dataset
from workers.engine.evaluation.evaluate import (
    ModelEvaluation, PreparedInputs, evaluate_model, prepare_inputs, quality_report,
)
from workers.engine.evaluation.latency import latency_batch
from workers.engine.evaluation.settings import EvalSettings
from workers.engine.evaluation.fidelity import item_fidelity, summarise_fidelity
from workers.engine.evaluation.generation import measure_generation
from workers.engine.evaluation.perplexity import PerplexityProbe
from workers.engine.evaluation.slices import slices_report
from workers.engine.evaluation.step_probe import StepProbe
from workers.engine.evaluation.quality import dataset_label_ids, label_names
from workers.engine.evaluation.runners import TorchRunner, cuda_provider_available
from workers.engine.loading import (
    load_config,
    load_model,
    load_tokenizer,
    max_positions,
    model_input_names,
)
from workers.engine.memory import peak_rss_mb
from workers.engine.model_folder import ModelFolderError, ModelFolderInfo, inspect_model_folder
from workers.engine.model_card import build_model_card
from workers.engine.progress import JobProgress, ProgressCallback
from workers.engine.package import MODEL_CARD_FILE, REPORT_FILE, package_size_bytes, write_zip
from workers.engine.recipe import Recipe, RecipeError
from workers.engine.search.goal import goal_task_problem
from workers.engine.search.rows import split_rows
from workers.engine.search.plan import JobFigures, plan_search, search_settings
from workers.engine.search.checkpoint import SearchCheckpoints
from workers.engine.search.perplexity import SearchPerplexity
from workers.engine.search.runner import SearchOutcome, SearchSetup, run_search
from workers.engine.request import PipelineRequest, PipelineResult
from workers.engine.report import (
    CheckpointsReport,
    EvaluationReport,
    FidelityReport,
    JobReport,
    LatencyReport,
    ModelInfoReport,
    ModelSideReport,
    Report,
    StepReport,
    StorageReport,
    collect_environment,
    compute_ratios,
)
from workers.engine.steps import StepEnvironment
from workers.engine.shipping import package_result, result_parameters, result_runner_for
from workers.engine.state import ModelState
from workers.engine.target import Target, changes_task, step_task_problems, target_problems, task_problem

logger = logging.getLogger(__name__)

# Share of the whole job each phase takes on the progress bar (roughly its share of the time).
_LOAD = (0.0, 0.05)
_EVAL_ORIGINAL = (0.05, 0.30)
_STEPS = (0.30, 0.65)
_PACKAGE = (0.65, 0.70)
_EVAL_RESULT = (0.70, 0.95)
_FINISH = (0.95, 1.0)


def _max_batch(settings: EvalSettings) -> int:
    """The largest batch the result is run with here: what an ExecuTorch program is exported to take."""
    return max(settings.batch_size, settings.energy_batch_size, *settings.latency_batch_sizes)


def _check_request(request: PipelineRequest) -> None:
    if request.device == "cuda" and not torch.cuda.is_available():
        raise EngineUserError("The job asks for cuda, but this worker has no usable GPU; run it on cpu.")
    problems = [] if request.recipe is None else target_problems(
        request.recipe.to_dict()["steps"], request.target, request.device
    )
    if problems:
        raise RecipeError(problems)
    if request.target == Target(runtime="onnxruntime", device="cuda") and not cuda_provider_available():
        raise EngineUserError(
            "The target is onnxruntime on cuda, but this worker's onnxruntime has no CUDA provider, so the result "
            "could not be measured where it will run; install onnxruntime-gpu on the GPU worker, or target torch."
        )
    if not request.model_dir.is_dir():
        raise EngineUserError(f"Model folder {request.model_dir} does not exist.")
    if request.dataset_path is not None and not request.dataset_path.is_file():
        raise EngineUserError(f"Dataset file {request.dataset_path} does not exist.")


@dataclass
class _Loaded:
    info: ModelFolderInfo
    dataset: EvalDataset  # the rows the original and the result are measured on
    tokenizer: PreTrainedTokenizerBase
    model: torch.nn.Module | None  # handed to the first step's state, then dropped here
    inputs: PreparedInputs
    # The texts steps calibrate and train on: the dataset itself, or a goal's search rows (held apart).
    calibration: EvalDataset
    calibration_label_ids: list[int] | None  # classifiers with labels: class id per row, UNLABELLED if none
    calibration_label_names: list[str | None] | None  # the same rows' labels as the dataset writes them
    search_inputs: PreparedInputs | None = None  # a goal's search rows, tokenized


def _load(request: PipelineRequest) -> _Loaded:
    """Checks everything the user can get wrong before anything expensive runs, then loads."""
    settings = request.eval
    _check_request(request)
    try:
        info = inspect_model_folder(request.model_dir)
    except ModelFolderError as exc:
        raise EngineUserError(str(exc)) from exc
    problem = task_problem(request.target, info.task)
    if problem is not None:
        raise EngineUserError(f"This {info.task} model cannot go to {request.target.describe()}: {problem}.")
    if request.goal is not None:
        problem = goal_task_problem(request.goal, info.task)
        if problem is not None:
            raise EngineUserError(f"goal.{problem[0]}: {problem[1]}.")
    else:
        step_problems = step_task_problems(request.recipe.to_dict()["steps"], info.task)
        if step_problems:
            raise RecipeError(step_problems)
    search_rows = request.goal.search_rows if request.goal is not None else 0
    dataset = load_eval_dataset(request.dataset_path, settings.max_samples + search_rows)
    calibration = dataset
    if request.goal is not None:
        calibration, dataset = split_rows(dataset, settings.max_samples, search_rows, request.goal.seed)
    config = load_config(request.model_dir)
    limit = max_positions(config)
    if limit is not None and settings.sequence_length > limit:
        raise EngineUserError(
            f"sequence_length {settings.sequence_length} exceeds the model's limit of {limit} positions."
        )
    new_task = request.recipe is not None and changes_task(request.recipe.steps)
    labels = dataset_label_ids(dataset, info.task, config, new_task)
    calibration_labels = dataset_label_ids(calibration, info.task, config, new_task)
    tokenizer = load_tokenizer(request.model_dir)
    # A causal LM is held as uploaded where every step takes it so (a goal's candidates are all llm_quantize).
    stored_dtype = info.task == "text-generation" and (
        request.goal is not None or request.recipe.takes_stored_dtype
    )
    model = load_model(request.model_dir, info.task, request.device, stored_dtype)
    inputs = prepare_inputs(tokenizer, dataset, settings, labels)
    search_inputs = None
    if request.goal is not None:
        search_inputs = prepare_inputs(tokenizer, calibration, search_settings(settings, request.goal), calibration_labels)
    logger.info(
        "loaded %s (%s, task %s): %s parameters, %.2f MB of weights; evaluating on %d texts from %s%s",
        info.architecture, info.model_type, info.task, f"{info.num_parameters:,}", info.size_bytes / 1e6,
        len(dataset), dataset.source,
        f", searching on {len(calibration)} others" if request.goal is not None else "",
    )
    return _Loaded(
        info=info, dataset=dataset, tokenizer=tokenizer, model=model, inputs=inputs, calibration=calibration,
        calibration_label_ids=None if calibration_labels is None else [int(label) for label in calibration_labels],
        calibration_label_names=label_names(calibration), search_inputs=search_inputs,
    )


def _apply_recipe(
    request: PipelineRequest, state: ModelState, loaded: _Loaded, progress: JobProgress, meter: EnergyMeter,
    step_probe: StepProbe, gpu_peak: GpuMemoryPeak,
) -> tuple[ModelState, list[StepReport], CheckpointsReport | None]:
    steps = request.recipe.steps
    width = (_STEPS[1] - _STEPS[0]) / len(steps)

    def on_step_progress(index: int, stage: str, fraction: float) -> None:
        progress(stage, (_STEPS[0] + index * width, _STEPS[0] + (index + 1) * width), fraction)

    return run_recipe_steps(
        steps, request.checkpoints, state, _step_environment(request, loaded, progress.announce), step_probe,
        gpu_peak, meter, request.model_dir, step_probe.reference_dir, on_step_progress,
    )


def _step_environment(
    request: PipelineRequest, loaded: _Loaded, announce: Callable[[dict], None] = lambda event: None
) -> StepEnvironment:
    return StepEnvironment(
        work_dir=request.work_dir, device=request.device, target=request.target, max_batch=_max_batch(request.eval),
        tokenizer=loaded.tokenizer, sequence_length=request.eval.sequence_length,
        calibration_texts=loaded.calibration.texts, calibration_labels=loaded.calibration_label_ids,
        calibration_label_names=loaded.calibration_label_names,
        model_paths=dict(request.model_paths), llm_python=request.llm_python,
        federation=request.federation, announce=announce, upload_dir=request.model_dir,
    )


def _write_outputs(request: PipelineRequest, report: Report, package_dir: Path) -> PipelineResult:
    report_dict = report.model_dump(mode="json")
    report_text = json.dumps(report_dict, indent=2) + "\n"
    (package_dir / REPORT_FILE).write_text(report_text, encoding="utf-8")
    # The card quotes the final report, so it is written with it, just before zipping.
    card = build_model_card(report_dict, request.dataset_sha256)
    (package_dir / MODEL_CARD_FILE).write_text(card, encoding="utf-8")
    request.output_dir.mkdir(parents=True, exist_ok=True)
    model_zip = write_zip(package_dir, request.output_dir / "model.zip")
    report_path = request.output_dir / REPORT_FILE
    report_path.write_text(report_text, encoding="utf-8")
    return PipelineResult(report=report_dict, model_zip=model_zip, report_path=report_path)


def _latency_summary(latency: LatencyReport) -> str:
    return ", ".join(f"{key} p50 {stats.p50_ms:.1f} ms" for key, stats in latency.batches().items())


def _search(
    request: PipelineRequest, loaded: _Loaded, original: ModelSideReport, original_search: ModelEvaluation,
    search_perplexity: SearchPerplexity | None, probe: InferenceProbe, meter: EnergyMeter, gpu_peak: GpuMemoryPeak,
    progress: JobProgress, started: float,
) -> SearchOutcome:
    """The goal's search replaces the recipe's steps and packaging: it returns the chosen candidate's package."""
    goal, settings = request.goal, request.eval
    figures = JobFigures(
        started=started, num_parameters=loaded.info.num_parameters, original_size_bytes=original.size_bytes,
        evaluation_rows=len(loaded.dataset), search_rows=len(loaded.calibration), settings=settings,
        original_latency=original.latency,
        row_fill=sum(int(batch["attention_mask"].sum()) for batch in loaded.search_inputs.batches)
        / (loaded.search_inputs.num_samples * settings.sequence_length),
        task=loaded.info.task, perplexity_tokens=None if search_perplexity is None else search_perplexity.tokens(),
    )
    search_eval = search_settings(settings, goal)
    plan = plan_search(goal, figures, request.target, tuple(search_eval.latency_batch_sizes))
    logger.info("search plan: %s; families %s", plan.preflight.as_dict(goal.max_candidates), ", ".join(plan.families))
    # A causal LM's candidates load the upload themselves (llm_quantize drops it at once): not held meanwhile.
    original_model = None if loaded.info.task == "text-generation" else loaded.model.to(request.device)
    loaded.model = None
    setup = SearchSetup(
        goal=goal, task=loaded.info.task, target=request.target, device=request.device,
        original_model=original_model, config_dir=request.model_dir, tokenizer=loaded.tokenizer,
        environment=_step_environment(request, loaded), inputs=loaded.search_inputs, settings=search_eval,
        original=original_search, original_size_bytes=original.size_bytes,
        original_kwh_per_1000=probe.kwh_per_1000("original"), requests_per_day=request.energy.requests_per_day,
        threads=original.latency.threads, max_batch=_max_batch(settings), work=plan.work, preflight=plan.preflight,
        deadline=plan.deadline, evaluation_rows=len(loaded.dataset), perplexity=search_perplexity,
    )
    checkpoints = None if request.checkpoints is None else SearchCheckpoints(
        request.checkpoints, meter, progress.announce, lambda number: request.work_dir / "search" / f"{number:02d}"
    )
    return run_search(
        setup, plan.families, meter, gpu_peak, lambda stage, fraction: progress(stage, _STEPS, fraction), checkpoints
    )


def run_pipeline(
    request: PipelineRequest, on_progress: ProgressCallback, announce: Callable[[dict], None] = lambda event: None
) -> PipelineResult:
    """`announce` gets the events a step has for the worker besides progress (see workers.engine.events)."""
    # One energy tracker for the whole job, stopped however the job ends; it never fails the job.
    with open_meter(request.energy) as meter:
        return _run(request, JobProgress(on_progress, announce), meter)


def _run(request: PipelineRequest, progress: JobProgress, meter: EnergyMeter) -> PipelineResult:
    started = time.perf_counter()
    gpu_peak = GpuMemoryPeak()
    settings = request.eval
    request.work_dir.mkdir(parents=True, exist_ok=True)

    progress("load", _LOAD, 0.0)
    with meter.stage("load"):
        loaded = _load(request)
    info, inputs = loaded.info, loaded.inputs
    progress("load", _LOAD, 1.0)

    # The original runs where the result will: the same device, so speed and energy compare like with like.
    original_runner = TorchRunner(
        loaded.model, info.task, model_input_names(loaded.model, loaded.tokenizer), request.target.device
    )
    with meter.stage("evaluate_original"):
        original_eval = evaluate_model(
            original_runner,
            info.task, inputs, settings, request.work_dir / "outputs" / "original",
            progress.phases("evaluate_original", _EVAL_ORIGINAL),
        )
        perplexity = original_generation = result_generation = None
        if info.task == "text-generation":
            perplexity = PerplexityProbe(
                loaded.tokenizer, loaded.dataset.texts, settings.perplexity_window, settings.perplexity_max_tokens,
                max_positions(loaded.model.config),
            )
            perplexity.measure("original", original_runner)
        # Generation is measured with transformers' KV cache, so only where the result runs on torch too
        # (an ONNX or ExecuTorch language model here has no KV cache).
        if perplexity is not None and request.target.runtime == "torch":
            original_generation = measure_generation(
                original_runner.model, perplexity.streams["dataset"].ids, request.target.device,
                settings.latency_batch_sizes, max_positions(loaded.model.config),
            )
    logger.info("original measured: %s", _latency_summary(original_eval.latency))
    original = ModelSideReport(
        format="safetensors",
        runtime="pytorch",
        size_bytes=sum((request.model_dir / name).stat().st_size for name in info.weight_files),
        total_size_bytes=info.size_bytes,
        num_parameters=info.num_parameters,
        latency=original_eval.latency,
        quality=original_eval.quality,
        generation=original_generation,
    )

    # Energy per inference of the original while it is loaded; the result's follows its evaluation.
    energy_batch = latency_batch(loaded.tokenizer, loaded.dataset, settings.energy_batch_size, settings.sequence_length)
    probe = InferenceProbe(meter, settings, energy_batch, request.target.device)
    progress("inference_energy.original", _EVAL_ORIGINAL, 1.0)
    probe.measure("original", original_runner)
    generation_energy = None
    if original_generation is not None:
        generation_energy = GenerationEnergyProbe(
            meter, perplexity.streams["dataset"].ids, settings.energy_batch_size, settings.energy_repeats,
            request.target.device, max_positions(loaded.model.config),
        )
        generation_energy.measure("original", original_runner.model, original_runner.runtime)
    original_search = search_perplexity = None
    if request.goal is not None:
        with meter.stage("search.original"):
            original_search = evaluate_model(
                original_runner, info.task, loaded.search_inputs, search_settings(settings, request.goal),
                request.work_dir / "outputs" / "original-search", lambda *_: None,
            )
            if perplexity is not None:
                search_perplexity = SearchPerplexity.measure(
                    original_runner, loaded.tokenizer, loaded.calibration.texts, perplexity,
                    settings.perplexity_max_tokens,
                )
    del original_runner

    search_report = task_reference = checkpoints = None
    if request.goal is None:
        # Back to where the steps run (they differ when, say, a GPU job targets the CPU).
        state = ModelState(task=info.task, config_dir=request.model_dir, torch_model=loaded.model.to(request.device))
        loaded.model = None  # the state owns it now, so a step that drops it frees the memory
        step_probe = StepProbe(
            info.task, inputs.batches, original_eval.outputs, threads=original.latency.threads,
            reference_dir=request.work_dir / "outputs" / "task-reference",
        )
        state, step_reports, checkpoints = _apply_recipe(request, state, loaded, progress, meter, step_probe, gpu_peak)
        task_reference = step_probe.task_reference
        progress("package", _PACKAGE, 0.0)
        with meter.stage("package"):
            packaged = package_result(
                state, request.target, request.work_dir, loaded.tokenizer, _max_batch(settings), settings.sequence_length
            )
        # A .pte does not list its weights to the runtime: the final state counts them.
        state_parameters = state.num_parameters() if packaged.format == "pte" else 0
        state = None
        recipe = request.recipe.to_dict()
    else:
        outcome = _search(
            request, loaded, original, original_search, search_perplexity, probe, meter, gpu_peak, progress, started
        )
        packaged, step_reports, state_parameters = outcome.packaged, outcome.steps, outcome.state_parameters
        recipe, search_report = Recipe.from_dict(outcome.recipe).to_dict(), outcome.report
        checkpoints = outcome.checkpoints
        original_search.outputs.remove()
    package_dir, files = packaged.package_dir, packaged.files
    gc.collect()
    progress("package", _PACKAGE, 1.0)

    # After a finetune step the result does another task: it is scored on that task's labels, and compared
    # with the model the finetune made rather than with the original.
    result_task = info.task if task_reference is None else task_reference.task
    result_inputs = inputs if task_reference is None else replace(
        inputs, labels=dataset_label_ids(loaded.dataset, result_task, task_reference)
    )
    reference_outputs = original_eval.outputs if task_reference is None else task_reference.outputs
    reference_predictions = original_eval.predictions if task_reference is None else task_reference.predictions
    # Measured on the packaged file itself: what the user downloads is what the report describes.
    result_runner = result_runner_for(packaged, request.target, result_task, loaded.tokenizer, original.latency.threads)
    with meter.stage("evaluate_result"):
        result_eval = evaluate_model(
            result_runner,
            result_task, result_inputs, settings, request.work_dir / "outputs" / "result",
            progress.phases("evaluate_result", _EVAL_RESULT), reference_outputs,
        )
        if perplexity is not None:
            perplexity.measure("result", result_runner)
        if original_generation is not None:
            result_generation = measure_generation(
                result_runner.model, perplexity.streams["dataset"].ids, request.target.device,
                settings.latency_batch_sizes, max_positions(result_runner.model.config),
            )
    items = item_fidelity(result_task, reference_outputs, result_eval.outputs)
    fidelity = summarise_fidelity(result_task, items, inputs.num_samples)
    logger.info(
        "result measured from the package: %.2f MB; %s; %s %.4f",
        packaged.size_bytes() / 1e6, _latency_summary(result_eval.latency),
        fidelity.primary_metric, fidelity.metrics[fidelity.primary_metric],
    )
    slices = slices_report(
        result_task, loaded.dataset, result_inputs, reference_predictions, result_eval.predictions, items,
        settings.slice_margin,
    )
    reference_quality = None
    if task_reference is not None:
        reference_quality = quality_report(result_inputs.labels, task_reference.predictions)
        task_reference.outputs.remove()
    original_eval.outputs.remove()
    result_eval.outputs.remove()
    result = ModelSideReport(
        format=packaged.format,
        runtime=result_runner.runtime,
        size_bytes=packaged.size_bytes(),
        total_size_bytes=package_size_bytes(package_dir),
        num_parameters=result_parameters(result_runner, packaged, state_parameters),
        latency=result_eval.latency,
        quality=result_eval.quality,
        generation=result_generation,
    )

    progress("inference_energy.result", _EVAL_RESULT, 1.0)
    probe.measure("result", result_runner)
    if generation_energy is not None:
        generation_energy.measure("result", result_runner.model, result_runner.runtime)
        generation_energy.book()
    del result_runner
    inference = probe.finish()
    energy = meter.report()
    payback = payback_section(energy, inference, request.energy)
    water, embodied = footprint_sections(
        energy, inference, payback, request.energy, request.footprint, request.target.device,
        time.perf_counter() - started,
    )

    progress("report", _FINISH, 0.0)
    report = Report(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        model=ModelInfoReport(
            architecture=info.architecture if task_reference is None else task_reference.architecture,
            model_type=info.model_type, task=result_task,
            original_task=None if task_reference is None else info.task,
            original_architecture=None if task_reference is None else info.architecture,
        ),
        original=original,
        result=result,
        fidelity=FidelityReport(
            **asdict(fidelity), reference="original" if task_reference is None else task_reference.step,
            reference_quality=reference_quality,
        ),
        ratios=compute_ratios(original, result),
        steps=step_reports,
        # Wall time up to the report; zipping, which follows, takes seconds at most.
        job=JobReport(
            recipe=recipe, device=request.device, target=request.target.model_dump(),
            wall_time_s=time.perf_counter() - started, peak_gpu_memory_mb=gpu_peak.job_mb(), checkpoints=checkpoints,
            peak_rss_mb=peak_rss_mb(),
        ),
        environment=collect_environment(),
        evaluation=EvaluationReport(
            dataset_source=loaded.dataset.source,
            num_samples=len(loaded.dataset),
            sequence_length=settings.sequence_length,
            batch_size=settings.batch_size,
        ),
        files=files,
        storage=None if packaged.sparse is None else StorageReport(
            sparse_tensors=packaged.sparse.tensors_sparse,
            dense_bytes=packaged.sparse.initializer_bytes_before,
            sparse_bytes=packaged.sparse.initializer_bytes_after,
        ),
        energy=energy,
        inference=inference,
        payback=payback,
        water=water,
        embodied=embodied,
        slices=slices,
        perplexity=None if perplexity is None else perplexity.report(),
        generation_energy=None if generation_energy is None else generation_energy.report(energy, request.energy),
        search=search_report,
    )
    pipeline_result = _write_outputs(request, report, package_dir)
    logger.info(
        "done in %.1f s: %.2fx smaller; the job used %.3g kWh",
        report.job.wall_time_s, report.ratios.compression_ratio, energy.total.energy_kwh,
    )
    progress("done", _FINISH, 1.0)
    return pipeline_result
