"""Tiny model folders and one pipeline run per model kind, shared by the engine tests (session scope:
each run takes seconds, and many tests read the same report)."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.factories import TINY_KINDS, build_tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUANTIZE_RECIPE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}
# Defaults except fewer timed runs: latency and energy figures are checked for shape, not for value.
FAST_EVAL = {"latency_warmup": 1, "latency_repeats": 3, "energy_repeats": 3, "energy_inferences_per_run": 64}

LABELLED_ROWS = [
    {"text": "I love this phone, it is great.", "label": "positive", "slice": "reviews"},
    {"text": "The battery died after one day.", "label": "negative", "slice": "reviews"},
    {"text": "Fast delivery and good service.", "label": 1, "slice": "service"},
    {"text": "Bad food and slow service.", "label": 0, "slice": "service"},
    {"text": "The team played a great game.", "label": "positive", "slice": "sports"},
    {"text": "A long and boring film.", "label": "negative", "slice": "films"},
    {"text": "Where is the train station?", "slice": "travel"},  # unlabelled rows are allowed
]


@pytest.fixture(scope="module")
def one_thread():
    """For a module's tests on tiny models: tiny matrices gain nothing from a second thread, and on a
    shared machine the thread pool's synchronisation costs more than the work."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {kind: build_tiny_model(kind, root / kind) for kind in TINY_KINDS}


@pytest.fixture(scope="session")
def labelled_dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("datasets") / "labelled.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in LABELLED_ROWS), encoding="utf-8")
    return path


@dataclass
class PipelineRun:
    model_dir: Path
    result: object  # PipelineResult
    progress: list[tuple[str, float]]
    output_dir: Path


@pytest.fixture(scope="session")
def hardware_footprint():
    """Boavizta's footprint of a fixed machine, from the real probe in its isolated interpreter."""
    from workers.engine.footprint.hardware import HardwareSpec, default_python, probe_hardware

    spec = HardwareSpec(cpu_name="AMD EPYC 7763", visible_threads=2, ram_gb=8, jobs_sharing_host=1)
    return probe_hardware(spec, None, default_python())


@pytest.fixture(scope="session")
def pipeline_runs(tiny_models, labelled_dataset, hardware_footprint, tmp_path_factory) -> dict[str, PipelineRun]:
    """The quantize recipe on each tiny model; the classifier is evaluated on a labelled dataset."""
    from workers.engine.pipeline import PipelineRequest, run_pipeline
    from workers.engine.recipe import Recipe

    runs = {}
    for kind, model_dir in tiny_models.items():
        root = tmp_path_factory.mktemp(f"run-{kind}")
        request = PipelineRequest(
            model_dir=model_dir,
            recipe=Recipe.from_dict(QUANTIZE_RECIPE),
            dataset_path=labelled_dataset if kind == "classifier" else None,
            work_dir=root / "work",
            output_dir=root / "out",
            eval=FAST_EVAL,
            footprint={"hardware": hardware_footprint.model_dump()},
        )
        progress: list[tuple[str, float]] = []
        result = run_pipeline(request, lambda stage, fraction: progress.append((stage, fraction)))
        runs[kind] = PipelineRun(model_dir=model_dir, result=result, progress=progress, output_dir=root / "out")
    return runs
