"""Command line for running one job in its own process: `python -m workers.engine run --spec spec.json`.

stdout carries only JSON lines ({"event": "progress" | "done" | "error", ...}) for the task that
runs this; every library log, warning or C-level print is routed to stderr. Exit codes: 0 done,
2 user-fixable error (message in the "error" event), 3 out of host memory, 4 out of GPU memory (the
"error" event names the stage and what it asked for; another attempt on the same GPU would fail the
same way, so it is not retried), 143 stopped by SIGTERM (a time limit), 1 anything else (traceback on
stderr).
"""

import argparse
import json
import logging
import os
import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from workers.engine.events import emit, event_stream

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1
EXIT_OUT_OF_MEMORY = 3
EXIT_GPU_OUT_OF_MEMORY = 4
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that `with` blocks and `finally` clauses run (the energy
    tracker stops, temporary files go) before the process exits."""


def _raise_terminated(_signum, _frame) -> None:  # noqa: ANN001
    raise Terminated()


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # Libraries speak only when something is wrong; the engine also says what it is doing, and
    # this stderr is the job log users read on the job page.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("workers.engine").setLevel(logging.INFO)
    warnings.simplefilter("ignore", DeprecationWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def gpu_out_of_memory_message(stage: str | None, error: BaseException) -> str:
    """torch's first sentence says what was asked for ("Tried to allocate 2.00 GiB. GPU 0 has a total
    capacity of ..."); the stage says which step asked."""
    detail = " ".join(str(error).split("\n")[0].split(". ")[:2]).strip()
    where = f"in {stage}" if stage else "while starting"
    return (
        f"The job ran out of GPU memory {where}: {detail}. Use a smaller batch_size or sequence_length, fewer "
        "calibration texts, or a GPU with more free memory."
    )


def _run(spec_path: Path, events: TextIO) -> int:
    # Imported here so that even import-time noise lands on stderr, after the redirection.
    from workers.engine.energy.tracker import detect_hardware_in_background
    from workers.engine.errors import EngineUserError

    # CodeCarbon's CPU detection waits ~1.3 s on a subprocess: let it overlap the torch import below.
    detect_hardware_in_background()
    from workers.engine.pipeline import PipelineRequest, run_pipeline
    from workers.engine.recipe import Recipe, RecipeError

    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        if not isinstance(spec, dict):
            raise EngineUserError("The spec must be a JSON object.")
        goal = spec.pop("goal", None)
        recipe = Recipe.from_dict(spec.pop("recipe", None)) if goal is None else None
        for optional in ("eval", "energy"):
            if spec.get(optional) is None:
                spec.pop(optional, None)  # absent or null: the defaults
        request = PipelineRequest(**spec, recipe=recipe, goal=goal)
    except RecipeError as exc:
        emit(events, {"event": "error", "message": f"Invalid recipe: {exc}", "errors": exc.errors})
        return EXIT_USER_ERROR
    except (OSError, json.JSONDecodeError, ValidationError, EngineUserError, TypeError) as exc:
        emit(events, {"event": "error", "message": f"Invalid spec {spec_path}: {exc}"})
        return EXIT_USER_ERROR

    import torch

    stages: list[str] = []

    def on_progress(stage: str, fraction: float) -> None:
        stages[:] = [stage]
        emit(events, {"event": "progress", "stage": stage, "fraction": fraction})

    try:
        result = run_pipeline(request, on_progress, lambda event: emit(events, event))
    except EngineUserError as exc:
        emit(events, {"event": "error", "message": str(exc)})
        return EXIT_USER_ERROR
    except torch.OutOfMemoryError as exc:
        traceback.print_exc(file=sys.stderr)
        emit(events, {"event": "error", "message": gpu_out_of_memory_message(stages[0] if stages else None, exc)})
        return EXIT_GPU_OUT_OF_MEMORY
    emit(events, {"event": "done", "report_path": str(result.report_path), "model_zip": str(result.model_zip)})
    return 0


def _suggest(spec_path: Path, events: TextIO) -> int:
    """`suggest-labels`: spec {model_dir, dataset_path, n, device, output_path}; the result is written to
    output_path as JSON (workers.engine.label_suggestions.Suggestions)."""
    from workers.engine.errors import EngineUserError
    from workers.engine.label_suggestions import suggest_labels

    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        model_dir, dataset_path = Path(spec["model_dir"]), Path(spec["dataset_path"])
        count, device, output_path = int(spec["n"]), spec.get("device", "cpu"), Path(spec["output_path"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        emit(events, {"event": "error", "message": f"Invalid spec {spec_path}: {exc}"})
        return EXIT_USER_ERROR
    try:
        result = suggest_labels(model_dir, dataset_path, count, device)
    except EngineUserError as exc:
        emit(events, {"event": "error", "message": str(exc)})
        return EXIT_USER_ERROR
    output_path.write_text(json.dumps(result.as_dict()), encoding="utf-8")
    emit(events, {"event": "done", "output_path": str(output_path)})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.engine", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="Run one compression job described by a spec file.")
    run.add_argument(
        "--spec", type=Path, required=True,
        help=(
            "JSON file: model_dir, recipe (or goal), dataset_path, device, work_dir, output_dir, "
            "eval, energy and dataset_sha256 (optional)."
        ),
    )
    suggest = commands.add_parser(
        "suggest-labels", help="Choose the unlabelled rows of a dataset most worth labelling for a classifier."
    )
    suggest.add_argument(
        "--spec", type=Path, required=True, help="JSON file: model_dir, dataset_path, n, device, output_path."
    )
    args = parser.parse_args(argv)

    events = event_stream()
    signal.signal(signal.SIGTERM, _raise_terminated)
    _quiet_libraries()
    try:
        return (_suggest if args.command == "suggest-labels" else _run)(args.spec, events)
    except Terminated:
        print("stopped by SIGTERM (a time limit or a shutdown)", file=sys.stderr)
        return EXIT_TERMINATED
    except MemoryError:
        traceback.print_exc(file=sys.stderr)
        emit(events, {"event": "error", "message": "The engine ran out of memory."})
        return EXIT_OUT_OF_MEMORY
    except Exception:
        traceback.print_exc(file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
