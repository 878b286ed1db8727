"""Checkpoints inside llm-compressor's oneshot, every few minutes between decoder layers, and resuming
from one. Imported by oneshot_script.py in .venv-llm, never by the service.

Why this hooks into llm-compressor: its sequential pipeline (llmcompressor 0.14,
pipelines/sequential/pipeline.py) calibrates one subgraph (about one decoder layer) at a time and keeps
what feeds the next one in an IntermediatesCache, but it has no way to stop at layer k and start there
again. No other library does this for it, so two of its functions are wrapped:
- `_get_batches(activations, num_batches, input_names, desc, ...)`, which every pass over a subgraph's
  batches goes through (desc "(k/n): Calibrating" or "(k/n): Propagating"). When subgraph k starts to
  calibrate, subgraphs 1..k-1 are final and `activations` holds exactly what subgraph k reads: a
  checkpoint is their weights (with the quantization parameters the modifiers attached) and that cache.
  On resume, the batches of the subgraphs already done are not yielded, so nothing is calibrated or
  propagated through them, and the saved weights and cache are put in place before the first one not done.
- `LifecycleCallbacks.sequential_epoch_end(modules)`, where the modifiers compress a subgraph's modules:
  it names the modules each subgraph holds, and it is skipped for the subgraphs already done.
With llm-compressor's default "independent" pipeline each data-driven modifier (SparseGPT, SmoothQuant,
GPTQ, AWQ) walks the layers in a pass of its own. A checkpoint names its pass; in a pass after the first it
holds every subgraph: those done in this pass, and the others as the pass before left them, which is how
they still are in the model when the checkpoint is taken.

A resumed run computes what an uninterrupted one does: the cache holds the same tensors, and the weights
are the same bytes (tests/engine/test_llm_layer_checkpoints.py compares the two).

Each subgraph's weights are written once per pass, into a store beside the checkpoints, and every
checkpoint hard-links the files it needs, so that saving after layer 30 does not write layers 1-29 again.
"""

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

MANIFEST = "layers.json"
ACTIVATIONS = "activations.pt"
_DESC = re.compile(r"\((\d+)/(\d+)\): (Calibrating|Propagating)")


def _link(source: Path, destination: Path) -> None:
    """A hard link (the same bytes, written once), or a copy where the two folders are on different disks.
    (The engine's checkpoint store has its twin; this file runs in .venv-llm, which cannot import it.)"""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _llmcompressor_version() -> str:
    from importlib.metadata import version

    return version("llmcompressor")


class LayerCheckpoints:
    """Saves (pass, layers done, activation cache, weights) every `interval_s` seconds between subgraphs,
    and puts a saved one back in place; `emit` reports both to the engine."""

    def __init__(self, model, spec: dict, emit: Callable[[dict], None]):
        self.model, self.emit = model, emit
        settings = spec.get("layer_checkpoints") or {}
        self.root = Path(settings["dir"]) if settings.get("dir") else None
        self.interval_s = float(settings.get("interval_s", 600.0))
        self.store = None if self.root is None else self.root / "store"
        if self.store is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.store.mkdir(parents=True)
        self.names = {module: name for name, module in model.named_modules()}
        # (pass, subgraph) -> (file in the store, the module names it holds)
        self.stored: dict[tuple[int, int], tuple[str, list[str]]] = {}
        self.pass_index, self.current, self.total = -1, 0, 0
        self.modules: dict[int, dict[int, list[str]]] = {}  # pass -> subgraph -> its module names
        self.skipping = False
        self.in_subgraph = False  # between a subgraph's calibration and its epoch end
        self.saves = 0
        self.last_saved = time.monotonic()
        self.resume = None
        if spec.get("resume_layers"):
            folder = Path(spec["resume_layers"])
            self.resume = {**json.loads((folder / MANIFEST).read_text(encoding="utf-8")), "folder": folder}
            if self.resume["llmcompressor"] != _llmcompressor_version():
                raise RuntimeError(
                    f"the layer checkpoint was made by llmcompressor {self.resume['llmcompressor']}, "
                    f"this is {_llmcompressor_version()}"
                )

    def install(self, sequential_module, lifecycle_callbacks, on_layer: Callable[[int, int, bool], None]) -> None:
        """Wraps the two functions (module docstring); `on_layer(k, n, resumed)` as subgraph k starts."""
        original_batches = sequential_module._get_batches
        original_epoch_end = lifecycle_callbacks.sequential_epoch_end.__func__

        def get_batches(*args, **kwargs):
            activations = kwargs.get("activations", args[0] if args else None)
            desc = kwargs.get("desc", args[3] if len(args) > 3 else "")
            match = _DESC.search(str(desc))
            if match and self._before_batches(activations, int(match[1]), int(match[2]), match[3], on_layer):
                return iter(())
            return original_batches(*args, **kwargs)

        def sequential_epoch_end(cls, modules, **kwargs):
            if not self.in_subgraph:  # the data-free pipeline's one call over the whole model (rtn, fp8)
                return original_epoch_end(cls, modules, **kwargs)
            self.in_subgraph = False
            self.modules[self.pass_index][self.current] = self._names_of(modules)
            if self.skipping:
                return None  # its compressed weights come from the checkpoint
            return original_epoch_end(cls, modules, **kwargs)

        sequential_module._get_batches = get_batches
        lifecycle_callbacks.sequential_epoch_end = classmethod(sequential_epoch_end)

    def _names_of(self, modules) -> list[str]:
        """The modules' names in the model. oneshot swaps some modules for calibration stand-ins after this
        object is made (Gemma's offset norms, llmcompressor.modeling.offset_norm): the names are looked up
        again when one is new, so that the stand-ins' weights are saved too."""
        if any(module not in self.names for module in modules):
            self.names = {module: name for name, module in self.model.named_modules()}
        return [self.names[module] for module in modules if module in self.names]

    def _done_by_resume(self, index: int) -> bool:
        if self.resume is None or self.resume.get("restored"):
            return False
        return self.pass_index < self.resume["pass"] or index <= self.resume["layers_done"]

    def _before_batches(self, activations, index: int, total: int, phase: str, on_layer) -> bool:
        """Whether this pass over subgraph `index`'s batches is skipped (done by an earlier attempt)."""
        if phase == "Propagating":
            return self.skipping
        if self.pass_index < 0 or index <= self.current:
            self._next_pass()
        self.current, self.total, self.in_subgraph = index, total, True
        self.skipping = self._done_by_resume(index)
        if not self.skipping:
            if self.resume is not None and not self.resume.get("restored"):
                self._restore(activations)
            elif self.root is not None and index > 1 and time.monotonic() - self.last_saved >= self.interval_s:
                self._save(activations, index - 1)
        on_layer(index, total, self.skipping)
        return self.skipping

    def _next_pass(self) -> None:
        self.pass_index += 1
        self.modules[self.pass_index] = {}

    def _store_subgraph(self, pass_index: int, subgraph: int) -> None:
        if (pass_index, subgraph) in self.stored:
            return
        from safetensors.torch import save_file

        names = self.modules[pass_index][subgraph]
        tensors = {}
        for module_name in names:
            module = self.model.get_submodule(module_name)
            for attribute, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
                if tensor is not None:
                    key = f"{module_name}.{attribute}" if module_name else attribute
                    tensors[key] = tensor.detach().to("cpu", copy=True).contiguous()
        file = f"pass{pass_index:02d}-subgraph{subgraph:04d}.safetensors"
        save_file(tensors, str(self.store / file))
        del tensors
        # A later pass's state of the same modules supersedes an earlier one's.
        for key, (old_file, old_names) in list(self.stored.items()):
            if key[0] < pass_index and set(old_names) <= set(names):
                (self.store / old_file).unlink(missing_ok=True)
                del self.stored[key]
        self.stored[(pass_index, subgraph)] = (file, names)

    def _save(self, activations, layers_done: int) -> None:
        import torch

        started = time.monotonic()
        # Subgraphs 1..k as this pass left them; after the first pass, the others as the pass before left them
        # (this pass has not reached them, so that is their state in the model now).
        needed = [(self.pass_index, subgraph) for subgraph in range(1, layers_done + 1)]
        if self.pass_index > 0:
            needed += [(self.pass_index - 1, subgraph) for subgraph in range(layers_done + 1, self.total + 1)]
        for key in needed:
            self._store_subgraph(*key)
        self.saves += 1
        folder = self.root / f"checkpoint-{self.saves:03d}"
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        files = []
        for pass_index, subgraph in needed:
            file, names = self.stored[(pass_index, subgraph)]
            _link(self.store / file, partial / file)
            files.append({"pass": pass_index, "subgraph": subgraph, "file": file, "modules": names})
        torch.save(activations.batch_intermediates, partial / ACTIVATIONS)
        manifest = {"pass": self.pass_index, "layers_done": layers_done, "layers": self.total, "files": files,
                    "llmcompressor": _llmcompressor_version()}
        (partial / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        partial.rename(folder)
        self.last_saved = time.monotonic()
        self.emit({"event": "layer_checkpoint", "path": str(folder), "pass": self.pass_index + 1,
                   "layers_done": layers_done, "layers": self.total,
                   "seconds": round(self.last_saved - started, 3),
                   "bytes": sum(path.stat().st_size for path in folder.iterdir())})

    def _restore(self, activations) -> None:
        import torch
        from compressed_tensors.offload import update_offload_parameter
        from safetensors.torch import load_file

        resume = self.resume
        if resume["layers"] != self.total:
            raise RuntimeError(f"the layer checkpoint has {resume['layers']} subgraphs, this model {self.total}")
        folder = resume["folder"]
        for entry in sorted(resume["files"], key=lambda item: (item["pass"], item["subgraph"])):
            for key, tensor in load_file(str(folder / entry["file"])).items():
                module_name, _, attribute = key.rpartition(".")
                update_offload_parameter(self.model.get_submodule(module_name), attribute, tensor)
            if self.store is not None:
                _link(folder / entry["file"], self.store / entry["file"])
                self.stored[(entry["pass"], entry["subgraph"])] = (entry["file"], entry["modules"])
        batches = torch.load(folder / ACTIVATIONS, weights_only=False)
        if len(batches) != len(activations.batch_intermediates):
            raise RuntimeError(
                f"the layer checkpoint has {len(batches)} calibration batches, this run "
                f"{len(activations.batch_intermediates)}"
            )
        activations.batch_intermediates[:] = batches
        resume["restored"] = True
        self.last_saved = time.monotonic()
        self.emit({"event": "layers_resumed", "pass": resume["pass"] + 1, "layers_done": resume["layers_done"],
                   "layers": resume["layers"]})
