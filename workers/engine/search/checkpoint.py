"""A goal job's checkpoint: after each candidate, what the search knows (every candidate measured, the ones
that failed or were skipped, its time corrections) and the package of its current choice, so that a new
attempt goes on from there instead of measuring every candidate again.

Only the chosen candidate's package is kept, as during the search itself: the others were measured and
are done with. Each checkpoint supersedes the one before it. Like a recipe's checkpoints, it is written to
a folder the worker stores and checks by sha256 (workers.tasks.checkpoint_store); the manifest is written
last, so a folder without one was cut off.
"""

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution

from workers.engine.checkpoints.recipe_run import ENERGY_NOTE, carried_stages
from workers.engine.checkpoints.settings import CHECKPOINT_FORMAT, CheckpointSettings
from workers.engine.checkpoints.store import CheckpointError, read_manifest, write_manifest
from workers.engine.energy.meter import EnergyMeter
from workers.engine.energy.schema import StageEnergy
from workers.engine.export.compact_storage import SparseStorageStats
from workers.engine.report import CheckpointSaved, CheckpointsReport, PackageFile, StepReport
from workers.engine.search.front import Measured
from workers.engine.search.report import SkippedReport
from workers.engine.search.space import CandidateSpec
from workers.engine.shipping import Packaged

KIND = "goal_search"

logger = logging.getLogger(__name__)


@dataclass
class SearchProgress:
    """What a search has learnt so far, apart from its current choice's package."""

    measured: list[Measured]
    failed: set[str]
    skipped: list[SkippedReport]
    skipped_for_budget: int
    corrections: dict[str, float]
    seconds: float  # the search's wall time so far, earlier attempts' included
    # Optuna's trials so far (params, distributions, values, constraints), so a new attempt's sampler
    # starts from what the earlier one learnt.
    trials: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_attempt: int | None = None
    resumed_candidates: list[int] = field(default_factory=list)


@dataclass
class KeptCandidate:
    number: int
    packaged: Packaged
    steps: list[StepReport]
    state_parameters: int


@dataclass
class RestoredSearch:
    progress: SearchProgress
    kept: KeptCandidate
    attempt: int
    energy_stages: list[StageEnergy]


def spec_to_dict(spec: CandidateSpec) -> dict[str, Any]:
    return {"family": spec.family, "choices": spec.choices, "recipe": spec.recipe, "rung": spec.rung,
            "bound": None if spec.bound is None else spec_to_dict(spec.bound), "raises_bound": spec.raises_bound}


def spec_from_dict(data: dict[str, Any]) -> CandidateSpec:
    bound = None if data["bound"] is None else spec_from_dict(data["bound"])
    return CandidateSpec(data["family"], data["choices"], data["recipe"], data["rung"], bound, data["raises_bound"])


def _measured_to_dict(measured: Measured) -> dict[str, Any]:
    return {**{key: value for key, value in asdict(measured).items() if key != "spec"}, "spec": spec_to_dict(measured.spec)}


def _measured_from_dict(data: dict[str, Any]) -> Measured:
    return Measured(**{**data, "spec": spec_from_dict(data["spec"])})


def _relative(path: Path, root: Path) -> str:
    return path.resolve().relative_to(root.resolve()).as_posix()


def _save_package(packaged: Packaged, candidate_dir: Path, folder: Path) -> dict[str, Any]:
    """Copies what the package's paths name (the package folder and, for a .cpz, its unpacked model beside it)
    and records the paths relative to the candidate's folder, which the checkpoint's folder replaces."""
    roots = {packaged.package_dir.resolve()}
    runnable = packaged.runnable_model.resolve()
    if not runnable.is_relative_to(packaged.package_dir.resolve()):
        roots.add(runnable.parent)
    for root in roots:
        shutil.copytree(root, folder / _relative(root, candidate_dir))
    return {
        "package_dir": _relative(packaged.package_dir, candidate_dir),
        "files": [item.model_dump() for item in packaged.files],
        "shipped_models": [_relative(path, candidate_dir) for path in packaged.shipped_models],
        "runnable_model": _relative(packaged.runnable_model, candidate_dir),
        "sparse": None if packaged.sparse is None else asdict(packaged.sparse),
        "format": packaged.format, "input_names": packaged.input_names,
    }


def _load_package(saved: dict[str, Any], folder: Path) -> Packaged:
    return Packaged(
        package_dir=folder / saved["package_dir"], files=[PackageFile(**item) for item in saved["files"]],
        shipped_models=[folder / path for path in saved["shipped_models"]],
        runnable_model=folder / saved["runnable_model"],
        sparse=None if saved["sparse"] is None else SparseStorageStats(**saved["sparse"]),
        format=saved["format"], input_names=saved["input_names"],
    )


def save_search_checkpoint(folder: Path, *, key: str, attempt: int, progress: SearchProgress, kept: KeptCandidate,
                           candidate_dir: Path, energy_stages: list[StageEnergy]) -> int:
    """Writes the checkpoint after `len(progress.measured)` candidates; returns its size in bytes."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    manifest = {
        "format": CHECKPOINT_FORMAT, "kind": KIND, "key": key, "attempt": attempt,
        "candidates_done": len(progress.measured),
        "measured": [_measured_to_dict(measured) for measured in progress.measured],
        "failed": sorted(progress.failed),
        "skipped": [item.model_dump() for item in progress.skipped],
        "skipped_for_budget": progress.skipped_for_budget,
        "corrections": progress.corrections,
        "seconds": progress.seconds,
        "trials": progress.trials,
        "resumed_candidates": progress.resumed_candidates,
        "kept": {
            "number": kept.number, "state_parameters": kept.state_parameters,
            "steps": [report.model_dump(mode="json") for report in kept.steps],
            "package": _save_package(kept.packaged, candidate_dir, folder / "kept"),
        },
        "energy_stages": [stage.model_dump(mode="json") for stage in energy_stages],
    }
    return write_manifest(folder, manifest)


def load_search_checkpoint(folder: Path, *, key: str, kept_dir: Callable[[int], Path]) -> RestoredSearch:
    """What a goal job's checkpoint holds, its chosen package copied to `kept_dir(number)`; CheckpointError
    when this job cannot use it."""
    manifest = read_manifest(folder)
    if manifest.get("format") != CHECKPOINT_FORMAT or manifest.get("key") != key or manifest.get("kind") != KIND:
        raise CheckpointError(
            f"the checkpoint was made for another goal, inputs or checkpoint format (key {manifest.get('key')}, "
            f"format {manifest.get('format')}; this job's key is {key}, format {CHECKPOINT_FORMAT})"
        )
    try:
        attempt = int(manifest["attempt"])
        measured = [_measured_from_dict(item) for item in manifest["measured"]]
        progress = SearchProgress(
            measured=measured, failed=set(manifest["failed"]),
            skipped=[SkippedReport(**item) for item in manifest["skipped"]],
            skipped_for_budget=int(manifest["skipped_for_budget"]), corrections=dict(manifest["corrections"]),
            seconds=float(manifest["seconds"]), trials=list(manifest["trials"]), resumed_from_attempt=attempt,
            resumed_candidates=sorted({*manifest["resumed_candidates"], *(m.number for m in measured)}),
        )
        saved = manifest["kept"]
        destination = kept_dir(int(saved["number"]))
        shutil.rmtree(destination, ignore_errors=True)
        shutil.copytree(folder / "kept", destination)
        kept = KeptCandidate(
            number=int(saved["number"]), packaged=_load_package(saved["package"], destination),
            steps=[StepReport.model_validate(report) for report in saved["steps"]],
            state_parameters=int(saved["state_parameters"]),
        )
        if not kept.packaged.runnable_model.exists() or all(m.number != kept.number for m in measured):
            raise CheckpointError("its chosen candidate's package is missing")
        stages = [StageEnergy.model_validate(stage) for stage in manifest["energy_stages"]]
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to rebuild the search means: search again
        raise CheckpointError(f"the checkpoint could not be loaded: {type(exc).__name__}: {exc}") from exc
    return RestoredSearch(progress, kept, attempt, stages)


class SearchCheckpoints:
    """A goal job's checkpoints: the one an earlier attempt left, restored (its energy carried into this
    attempt's), and one saved after each candidate this attempt measures, announced for the worker to store
    in place of the one before."""

    def __init__(self, settings: CheckpointSettings, meter: EnergyMeter, announce: Callable[[dict], None],
                 kept_dir: Callable[[int], Path]):
        self.settings, self.meter, self.announce = settings, meter, announce
        self.report = CheckpointsReport(attempt=settings.attempt, energy=ENERGY_NOTE)
        self.restored: RestoredSearch | None = None
        if settings.resume_dir is None:
            return
        try:
            self.restored = load_search_checkpoint(settings.resume_dir, key=settings.key, kept_dir=kept_dir)
        except CheckpointError as exc:
            logger.warning("not resuming the search: %s; searching from the start", exc)
            self.report.problem = str(exc)
            return
        meter.carry(carried_stages(self.restored.energy_stages, self.restored.attempt))
        self.report.resumed_from_attempt = self.restored.attempt
        self.report.resumed_steps = self.restored.progress.resumed_candidates
        logger.info("resumed the search after %d candidates from attempt %d's checkpoint",
                    len(self.restored.progress.measured), self.restored.attempt)

    def save(self, progress: SearchProgress, kept: KeptCandidate, candidate_dir: Path) -> None:
        if self.settings.save_dir is None:
            return
        number = len(progress.measured)
        folder = self.settings.save_dir / f"step-{number:02d}"
        started = time.perf_counter()
        try:
            size = save_search_checkpoint(
                folder, key=self.settings.key, attempt=self.settings.attempt, progress=progress, kept=kept,
                candidate_dir=candidate_dir, energy_stages=self.meter.stages(),
            )
        except Exception as exc:  # noqa: BLE001 - a checkpoint only saves work; the search goes on without it
            logger.warning("the checkpoint after candidate %d could not be saved", number, exc_info=True)
            self.report.not_saved.append(f"candidate {number}: {type(exc).__name__}: {exc}"[:500])
            shutil.rmtree(folder, ignore_errors=True)
            return
        self.report.saved.append(CheckpointSaved(step=number, seconds=time.perf_counter() - started, size_bytes=size))
        self.announce({"event": "checkpoint", "step": number, "path": str(folder), "supersedes_earlier": True})


def trial_record(trial: optuna.Trial, values: list[float] | None, constraints: dict[str, float] | None) -> dict:
    return {"params": trial.params, "values": values, "constraints": constraints,
            "distributions": {name: distribution_to_json(item) for name, item in trial.distributions.items()}}


def add_trial(study: optuna.Study, record: dict) -> None:
    """An earlier attempt's trial, told to this attempt's sampler; one whose params this attempt's space no
    longer has (a family dropped for the time left) is left out."""
    try:
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED if record["values"] is None else optuna.trial.TrialState.COMPLETE,
            params=record["params"], values=record["values"], constraints=record["constraints"],
            distributions={name: json_to_distribution(item) for name, item in record["distributions"].items()},
        ))
    except ValueError as exc:
        logger.info("search: an earlier attempt's trial is left out of the sampler: %s", exc)
