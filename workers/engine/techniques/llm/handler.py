"""The `llm_quantize` step: hands the causal LM to llm-compressor, in its own interpreter (see
oneshot_script.py), and takes back a compressed-tensors folder, which is what ships.

The model in memory is written out and dropped before the subprocess loads it, so the job never holds
two copies. The compressed folder is then reloaded here with plain `from_pretrained` (compressed-tensors
installed), as its user would load it, for the step's own fidelity probe.
"""

import gc
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from workers.engine.checkpoints.store import PretrainedBase
from workers.engine.checkpoints.settings import progress_text
from workers.engine.config_folder import PRUNED_SHAPES_FILE
from workers.engine.errors import EngineUserError
from workers.engine.loading import max_positions
from workers.engine.state import ModelState, StepContext
from workers.engine.techniques.llm.config import LlmQuantizeConfig
from workers.engine.venvs import sibling_venv_python

__all__ = ["apply_llm_quantize", "default_llm_python", "script_spec"]

logger = logging.getLogger(__name__)

SCRIPT = Path(__file__).with_name("oneshot_script.py")
_STDERR_TAIL_LINES = 8
_EXIT_WAIT_S = 60  # for a script that closed its output to exit


def default_llm_python() -> Path:
    """The interpreter of .venv-llm beside the running venv, which `make install` builds."""
    return sibling_venv_python(".venv-llm")


def _calibration_passes(config: LlmQuantizeConfig) -> int:
    """How many times llm-compressor walks the layers with calibration data (one per data-driven modifier)."""
    passes = int(config.sparsity != "none") + int(config.resolved_smoothing() > 0)
    passes += int(config.resolved_algorithm() != "rtn" or config.kv_cache != "none")
    return max(passes, 1)


class _LayerProgress:
    """Turns the script's "layer k of n" events into the step's progress, an ETA in the log, and per-layer times."""

    def __init__(self, context: StepContext, passes: int):
        self.context, self.passes = context, passes
        self.pass_index, self.last_index, self.last_elapsed = 0, 0, None
        self.fraction = 0.0
        self.layer_seconds: list[float] = []  # the layers this attempt calibrated, not those it resumed
        self.last_resumed = False

    def __call__(self, event: dict) -> None:
        index, total, elapsed = event["index"], event["total"], event["elapsed_s"]
        if index <= self.last_index:
            self.pass_index += 1
        elif self.last_elapsed is not None and not self.last_resumed:
            self.layer_seconds.append(round(elapsed - self.last_elapsed, 3))
        self.last_index, self.last_elapsed, self.last_resumed = index, elapsed, bool(event.get("resumed"))
        done = (min(self.pass_index, self.passes - 1) * total + index - 1) / (self.passes * total)
        self.fraction = max(self.fraction, done)
        self.context.on_progress(self.fraction)
        eta = elapsed / self.fraction * (1 - self.fraction) if self.fraction > 0 else None
        logger.info(
            "llm_quantize: layer %d of %d (pass %d of %d)%s", index, total, self.pass_index + 1, self.passes,
            "" if eta is None else f", about {eta:.0f} s left",
        )


def _stored_dtype(config_dir: Path) -> torch.dtype:
    """The dtype the uploaded checkpoint was stored in (the job may hold the model in float32 instead)."""
    config = json.loads((config_dir / "config.json").read_text(encoding="utf-8"))
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(name, torch.float32)


def _save_input(state: ModelState, context: StepContext, folder: Path) -> Path:
    """The model as a transformers folder, in the dtype it was uploaded in (so what the scheme leaves
    unquantized, like the lm_head, ships in those bytes). The model itself is left as it is: in a search it
    is the original every candidate starts from."""
    model, dtype = state.torch_model, _stored_dtype(state.config_dir)
    weights = None if next(model.parameters()).dtype == dtype else {
        name: tensor.to(dtype) for name, tensor in model.state_dict().items()
    }
    model.save_pretrained(folder, safe_serialization=True, state_dict=weights)
    if weights is not None:
        # The config names the in-memory copy's float32; llm-compressor loads by it, and would ship what the
        # scheme leaves unquantized in float32 instead of the uploaded dtype.
        config_path = folder / "config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["dtype"] = str(dtype).removeprefix("torch.")
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    context.tokenizer.save_pretrained(folder)
    return folder


def _write_input(state: ModelState, context: StepContext) -> tuple[Path, bool]:
    """(the folder the subprocess loads, whether it is this step's own to delete); the state's reference to
    the model is dropped after, so the job never holds it beside the compressed one it reloads. The upload,
    untouched (the first step), is read where it is: no copy of its weights is written (16 GB for an 8B
    model). Otherwise a search's original is written once per job (context.reuse)."""
    if context.upload_dir is not None and not (context.upload_dir / PRUNED_SHAPES_FILE).is_file():
        folder, own = context.upload_dir, False
    elif context.reuse is not None:
        folder, own = context.reuse.file("llm_input", lambda path: _save_input(state, context, path)), False
    else:
        state.torch_model.to(_stored_dtype(state.config_dir))  # in place: this copy is the step's own
        folder, own = _save_input(state, context, context.work_dir / "input"), True
    state.torch_model = None
    gc.collect()
    return folder, own


class _LayerCheckpoints:
    """Hands each checkpoint the script writes between layers to the run's checkpoints (context.within_step),
    with the state before the step: the input folder the script loads."""

    def __init__(self, context: StepContext, passes: int, task: str, input_dir: Path):
        self.within, self.passes, self.task, self.input_dir = context.within_step, passes, task, input_dir
        self.saved = 0
        self.resumed: dict | None = None  # how far the earlier attempt had got, once put back in place

    @property
    def saving(self) -> bool:
        return self.within is not None and self.within.save is not None

    @property
    def resuming(self) -> bool:
        return self.within is not None and self.within.resume is not None

    def spec(self, work_dir: Path, resume: bool) -> dict:
        spec = {}
        if self.saving:
            spec["layer_checkpoints"] = {"dir": str(work_dir / "layer-checkpoints"), "interval_s": self.within.interval_s}
        if resume and self.resuming:
            spec["resume_layers"] = str(self.within.resume.files)
        return spec

    def progress(self, event: dict) -> dict:
        return {"pass": event["pass"], "passes": self.passes, "layers_done": event["layers_done"],
                "layers": event["layers"]}

    def __call__(self, event: dict) -> None:
        if event["event"] == "layers_resumed":
            self.resumed = self.progress(event)
            logger.info("llm_quantize: went on from an earlier attempt's checkpoint after %s",
                        progress_text(self.resumed))
        elif event["event"] == "layer_checkpoint" and self.saving:
            self.saved += 1
            self.within.save(Path(event["path"]), self.progress(event), PretrainedBase(self.task, self.input_dir))


def _run_script(python: Path, spec_path: Path, device: str, progress: _LayerProgress,
                checkpoints: _LayerCheckpoints) -> dict:
    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU job stays on the CPU even on a GPU host
    stderr_path = spec_path.with_name("oneshot.stderr")
    with stderr_path.open("w", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            [str(python), str(SCRIPT), str(spec_path)], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )
        done, ended = None, False
        try:
            for line in process.stdout:
                event = json.loads(line)
                if event["event"] == "layer":
                    progress(event)
                elif event["event"] == "done":
                    done = event
                else:
                    checkpoints(event)
            ended = True
        finally:
            # A SIGTERM to the engine (a time limit) must not leave llm-compressor running; a script that
            # closed its output is exiting, and its own exit code says how it ended.
            if process.poll() is None and done is None:
                try:
                    process.wait(timeout=_EXIT_WAIT_S if ended else 0)
                except subprocess.TimeoutExpired:
                    process.kill()
            code = process.wait()
    if code != 0 or done is None:
        lines = [line for line in stderr_path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        # The exception's own line first: the message may be cut short where it is stored.
        tail = f"{lines[-1]} (its stderr ends: {' | '.join(lines[-_STDERR_TAIL_LINES:])})" if lines else "no output"
        raise RuntimeError(f"llm-compressor failed (exit {code}): {tail}")
    return done


def script_spec(
    config: LlmQuantizeConfig, model_dir: Path, output_dir: Path, calibration_file: Path, sequence_length: int
) -> dict:
    """What oneshot_script.py reads: the step's params, resolved, and where its files are."""
    return {
        "model_dir": str(model_dir),
        "output_dir": str(output_dir),
        "calibration_file": str(calibration_file),
        "scheme": config.scheme,
        "algorithm": config.resolved_algorithm(),
        "group_size": config.group_size,
        "activation_order": config.activation_order,
        "smoothing_strength": config.resolved_smoothing(),
        "sparsity": config.sparsity,
        "kv_cache": config.kv_cache,
        "keep": config.keep,
        "max_sequence_length": sequence_length,
    }


def apply_llm_quantize(config: LlmQuantizeConfig, state: ModelState, context: StepContext) -> ModelState:
    if state.task != "text-generation":
        raise EngineUserError(f"llm_quantize compresses causal language models; this model's task is {state.task}.")
    python = context.llm_python or default_llm_python()
    if not python.exists():
        raise EngineUserError(
            f"llm_quantize needs llm-compressor's interpreter {python}, which does not exist: run `make install` "
            "(it builds .venv-llm), or set COMPRESSO_LLM_PYTHON to a Python that has llmcompressor installed."
        )
    limit = max_positions(state.torch_model.config)
    sequence_length = min(config.max_sequence_length, limit) if limit else config.max_sequence_length
    texts = context.calibration_texts[: config.calibration_samples]
    if not texts:
        raise EngineUserError("llm_quantize needs calibration texts; give the job a dataset.")
    calibration_file = context.work_dir / "calibration.jsonl"
    calibration_file.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    # The compressed result comes back in the dtype the job held the model in (float32, or the upload's).
    held_dtype = next(state.torch_model.parameters()).dtype
    input_dir, own_input = _write_input(state, context)
    output_dir = context.work_dir / "compressed"
    passes = _calibration_passes(config)
    checkpoints = _LayerCheckpoints(context, passes, state.task, input_dir)

    def run(resume: bool) -> tuple[dict, _LayerProgress]:
        progress = _LayerProgress(context, passes)
        spec = script_spec(config, input_dir, output_dir, calibration_file, sequence_length)
        spec_path = context.work_dir / "oneshot.json"
        spec_path.write_text(json.dumps(spec | checkpoints.spec(context.work_dir, resume)), encoding="utf-8")
        return _run_script(python, spec_path, context.device, progress, checkpoints), progress

    started = time.perf_counter()
    resume_problem = None
    try:
        done, progress = run(resume=True)
    except RuntimeError as exc:
        if not checkpoints.resuming or checkpoints.resumed is not None:
            raise
        # The earlier attempt's layers could not be put back (another llm-compressor, a damaged file): they
        # are computed again.
        resume_problem = str(exc)[:500]
        logger.warning("llm_quantize: not going on from the earlier attempt's layers (%s); starting over", exc)
        done, progress = run(resume=False)
    logger.info("llm_quantize: llm-compressor finished in %.1f s", time.perf_counter() - started)
    # The input copy is no longer needed; the compressed folder is the state from here on.
    if own_input:
        shutil.rmtree(input_dir)
    model = AutoModelForCausalLM.from_pretrained(output_dir, dtype=held_dtype)
    context.placement["quantize"] = done["device"]
    context.details.update(
        scheme=config.scheme,
        algorithm=config.resolved_algorithm(),
        smoothing_strength=config.resolved_smoothing() or None,
        sparsity=config.sparsity,
        # compressed-tensors 0.19 dropped its sparse (bitmask) compressors: the 2:4 zeros are stored as they are.
        sparsity_storage=None if config.sparsity == "none" else "dense zeros: no bytes saved on disk",
        kv_cache=config.kv_cache,
        kept_layers=done["kept_layers"],
        held_dtype=str(held_dtype).removeprefix("torch."),
        calibration_samples=done["calibration_samples"],
        calibration_sequence_length=sequence_length,
        layer_seconds=progress.layer_seconds,
        layer_checkpoints_saved=checkpoints.saved,
        resumed_layers=checkpoints.resumed,
        layer_resume_problem=resume_problem,
        quantize_s=done["quantize_s"],
        peak_rss_mb=done["peak_rss_mb"],
        peak_gpu_memory_mb=done["peak_gpu_memory_mb"],
        library_versions=done["versions"],
    )
    return ModelState(
        task=state.task, config_dir=output_dir, torch_model=model.to(context.device), compressed_dir=output_dir
    )
