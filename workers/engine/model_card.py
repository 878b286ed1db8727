"""The package's README.md: a Hugging Face Hub model card (YAML metadata, markdown body) written from
the final report, so what the Hub shows is what was measured.
"""

import json
from typing import Any, NamedTuple

import yaml

from workers.engine.footprint.card import footprint_section
from workers.engine.markdown import cell as _cell
from workers.engine.markdown import number as _number
from workers.engine.markdown import table as _table

# Hub tags per technique, so a search for "quantized" finds the model.
_TECHNIQUE_TAGS = {"quantize": ["quantized"]}
# Energy section methods (workers.engine.energy.schema) that carry no figures.
_NO_FIGURES = ("unavailable", "disabled")


def _energy(report: dict[str, Any]) -> dict[str, Any] | None:
    """The energy section when it holds a measurement or an estimate, else None."""
    energy = report.get("energy")
    if not isinstance(energy, dict) or energy.get("method") in _NO_FIGURES:
        return None
    return energy


# The Hub's library_name for each shipped format.
_LIBRARY = {"safetensors": "transformers", "pte": "executorch"}


def _library(report: dict[str, Any]) -> str:
    return _LIBRARY.get(report["result"]["format"], "onnx")


def _tags(report: dict[str, Any]) -> list[str]:
    library = _library(report)
    tags = ["compresso", library, report["model"]["model_type"]]
    for step in report["steps"]:
        tags += _TECHNIQUE_TAGS.get(step["technique"], [step["technique"]])
        scheme = step["params"].get("scheme")
        if isinstance(scheme, str):
            tags.append(scheme.split("_")[0])  # int8_dynamic -> int8
    return list(dict.fromkeys(tags))


def _hardware(report: dict[str, Any], inputs: dict[str, Any]) -> str:
    named = [str(inputs["cpu_model"])] if inputs.get("cpu_model") else []
    if inputs.get("gpu_model"):
        named.append(f"{inputs.get('gpu_count') or 1} x {inputs['gpu_model']}")
    if named:
        return ", ".join(named)
    environment = report["environment"]
    return f"{report['job']['device']}, {environment['cpu_count']} CPU cores ({environment['platform']})"


def _co2_metadata(report: dict[str, Any]) -> dict[str, Any] | None:
    """The Hub's co2_eq_emissions block: grams CO2e of running this compression job."""
    energy = _energy(report)
    if energy is None:
        return None
    inputs = energy.get("inputs") or {}
    block: dict[str, Any] = {}
    emissions = (energy.get("total") or {}).get("co2e_g")
    if isinstance(emissions, int | float):
        block["emissions"] = float(emissions)
    tracker = " ".join(str(inputs[key]) for key in ("tracker", "tracker_version") if inputs.get(key)) or "compresso"
    block["source"] = f"{tracker}, {energy.get('method', 'estimated')}, over the whole compression job"
    # Neither of the Hub's usual values (pre-training, fine-tuning) fits: say what was done.
    block["training_type"] = "post-training compression (" + ", ".join(s["technique"] for s in report["steps"]) + ")"
    block["geographical_location"] = str(inputs.get("country") or "unknown (world average grid)")
    block["hardware_used"] = _hardware(report, inputs)
    return block


def card_metadata(report: dict[str, Any]) -> dict[str, Any]:
    # base_model is left out: compresso sees a folder, not a Hub id. Its task names are the Hub's
    # pipeline tags (feature-extraction, text-classification, text-generation).
    metadata: dict[str, Any] = {
        "library_name": _library(report),
        "pipeline_tag": report["model"]["task"],
        "tags": _tags(report),
    }
    co2 = _co2_metadata(report)
    if co2 is not None:
        metadata["co2_eq_emissions"] = co2
    return metadata


# --- Markdown pieces ---

def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.2f} MB ({num_bytes:,} bytes)"


class _Usage(NamedTuple):
    imports: tuple[str, ...]  # from transformers, besides AutoTokenizer
    setup: str
    tail: str  # what to do with `output`


_USAGE = {
    "feature-extraction": _Usage(
        (), "",
        "# Mean pooling over real tokens, as compresso measured it.\n"
        'mask = encoded["attention_mask"][..., None]\n'
        "embeddings = (output * mask).sum(axis=1) / mask.sum(axis=1)",
    ),
    "text-classification": _Usage(
        ("AutoConfig",), "",
        "probabilities = np.exp(output) / np.exp(output).sum(axis=-1, keepdims=True)\n"
        'labels = AutoConfig.from_pretrained(".").id2label\n'
        "print([labels[int(i)] for i in probabilities.argmax(axis=-1)])",
    ),
    "text-generation": _Usage(
        (), "tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token  # GPT-2 has none\n",
        "# Logits for every position; the graph has no KV cache, so each step reruns the sequence.\n"
        "next_token = int(output[0, -1].argmax())\n"
        "print(tokenizer.decode([next_token]))",
    ),
}


def _folder_note(report: dict[str, Any]) -> str:
    packed = [item["path"] for item in report["files"] if item["path"].endswith(".cpz")]
    if packed:
        # The .cpz is entropy-coded; onnxruntime needs the folder it decodes to.
        return f"# First, in a shell: compresso unpack {packed[0]} model && cd model\n# then run this there."
    return "# Run from the unzipped package folder."


# The transformers class that loads each task's result, for a torch target's card.
_AUTO_CLASS = {
    "feature-extraction": "AutoModel",
    "text-classification": "AutoModelForSequenceClassification",
    "text-generation": "AutoModelForCausalLM",
}


def _torch_usage(report: dict[str, Any]) -> str:
    usage = _USAGE.get(report["model"]["task"], _Usage((), "", ""))
    auto_class = _AUTO_CLASS.get(report["model"]["task"], "AutoModel")
    device = report["result"]["latency"]["device"]
    length = report["evaluation"]["sequence_length"]
    quantized = any("torchao" in item["description"] for item in report["files"])
    output = "logits" if report["model"]["task"] != "feature-extraction" else "last_hidden_state"
    install = "# pip install torchao  (config.json records torchao's quantization)\n" if quantized else ""
    code = f"""{install}import numpy as np
import torch
from transformers import {", ".join(sorted({"AutoTokenizer", auto_class, *usage.imports}))}

# Run from the unzipped package folder.
tokenizer = AutoTokenizer.from_pretrained(".")
{usage.setup}model = {auto_class}.from_pretrained(".", dtype="auto", device_map="{device}").eval()
encoded = tokenizer(["An example sentence."], padding=True, truncation=True, max_length={length}, return_tensors="pt")
with torch.inference_mode():
    output = model(**encoded.to(model.device)).{output}.float().cpu().numpy()
encoded = {{key: value.cpu().numpy() for key, value in encoded.items()}}
{usage.tail}"""
    return f"## How to use\n\n```python\n{code.rstrip()}\n```"


def _compressed_tensors_usage(report: dict[str, Any]) -> str:
    """A causal LM's compressed-tensors checkpoint: vLLM serves it as it is; transformers reloads it."""
    device = report["result"]["latency"]["device"]
    return f"""## How to use

With vLLM, which reads `quantization_config` from config.json and picks its kernels (run from the unzipped folder):

```bash
vllm serve .
```

```python
from vllm import LLM, SamplingParams

llm = LLM(model=".")
print(llm.generate(["An example sentence"], SamplingParams(max_tokens=32))[0].outputs[0].text)
```

With transformers (`pip install compressed-tensors`):

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(".")
model = AutoModelForCausalLM.from_pretrained(".", dtype="auto", device_map="{device}")
encoded = tokenizer(["An example sentence"], return_tensors="pt").to(model.device)
print(tokenizer.decode(model.generate(**encoded, max_new_tokens=32)[0]))
```"""


def _executorch_usage(report: dict[str, Any]) -> str:
    usage = _USAGE.get(report["model"]["task"], _Usage((), "", ""))
    [program] = [item for item in report["files"] if item["path"].endswith(".pte")]
    inputs = program["description"].split("execute([", 1)[1].split("])", 1)[0]
    length = report["evaluation"]["sequence_length"]
    code = f"""import numpy as np
import torch
from executorch.runtime import Runtime
from transformers import {", ".join(sorted({"AutoTokenizer", *usage.imports}))}

# Run from the unzipped package folder (pip install executorch); on a phone, the same .pte runs in
# ExecuTorch's C++ or mobile runtimes.
tokenizer = AutoTokenizer.from_pretrained(".")
{usage.setup}method = Runtime.get().load_program("{program["path"]}").load_method("forward")
encoded = tokenizer(["An example sentence."], padding=True, truncation=True, max_length={length}, return_tensors="np")
output = method.execute([torch.from_numpy(encoded[name].astype(np.int64)) for name in {[name.strip() for name in inputs.split(",")]!r}])[0].numpy()
{usage.tail}"""
    return f"## How to use\n\n```python\n{code.rstrip()}\n```"


def _usage(report: dict[str, Any]) -> str:
    library = _library(report)
    if any(item["path"] == "recipe.yaml" for item in report["files"]):
        return _compressed_tensors_usage(report)
    if library == "transformers":
        return _torch_usage(report)
    if library == "executorch":
        return _executorch_usage(report)
    usage = _USAGE.get(report["model"]["task"], _Usage((), "", ""))
    length = report["evaluation"]["sequence_length"]
    code = f"""import numpy as np
import onnxruntime as ort
from transformers import {", ".join(sorted({"AutoTokenizer", *usage.imports}))}

{_folder_note(report)}
tokenizer = AutoTokenizer.from_pretrained(".")
{usage.setup}session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
encoded = tokenizer(["An example sentence."], padding=True, truncation=True, max_length={length}, return_tensors="np")
feeds = {{item.name: encoded[item.name].astype(np.int64) for item in session.get_inputs()}}
output = session.run(None, feeds)[0]
{usage.tail}"""
    return f"## How to use\n\n```python\n{code.rstrip()}\n```"


def _recipe(report: dict[str, Any]) -> str:
    rows = [[index, step["technique"], step["version"], json.dumps(step["params"])]
            for index, step in enumerate(report["steps"], start=1)]
    recipe = json.dumps(report["job"]["recipe"], indent=2)
    return "## Recipe\n\n" + _table(["step", "technique", "version", "params"], rows) + f"\n\n```json\n{recipe}\n```"


def _evaluation_data(report: dict[str, Any], dataset_sha256: str | None) -> str:
    evaluation = report["evaluation"]
    if evaluation["dataset_source"] == "builtin":
        source = "compresso's built-in sample (unlabelled sentences, mostly English, of many registers)"
    else:
        source = "a dataset uploaded by the user"
        source += f", sha256 `{dataset_sha256}`" if dataset_sha256 else " (sha256 not recorded)"
    return (
        f"## Evaluation data\n\nMeasured on {source}: {evaluation['num_samples']} rows, truncated to "
        f"{evaluation['sequence_length']} tokens, batches of {evaluation['batch_size']}."
    )


_PERPLEXITY_LABELS = {"dataset": "Perplexity, the job's texts", "general": "Perplexity, builtin English sample"}


def _results(report: dict[str, Any]) -> str:
    original, result = report["original"], report["result"]
    rows = [
        ["Weights size", _size(original["size_bytes"]), _size(result["size_bytes"])],
        ["Total size", _size(original["total_size_bytes"]), _size(result["total_size_bytes"])],
        ["Parameters", f"{original['num_parameters']:,}", f"{result['num_parameters']:,}"],
        ["Runtime", original["runtime"], f"{result['runtime']} ({result['latency']['device']})"],
    ]
    for key in sorted(result["latency"], key=lambda name: (len(name), name)):
        if key.startswith("batch_") and key in original["latency"]:
            before, after = original["latency"][key], result["latency"][key]
            label = f"Latency {key.replace('_', ' ')} (p50 / p95)"
            rows.append([label, f"{before['p50_ms']:.2f} / {before['p95_ms']:.2f} ms",
                         f"{after['p50_ms']:.2f} / {after['p95_ms']:.2f} ms"])
    if original.get("generation") and result.get("generation"):
        for key, after in result["generation"]["batches"].items():
            before = original["generation"]["batches"].get(key)
            if before is None:
                continue
            label = key.replace("_", " ")
            rows.append([f"Time to first token, {label}", f"{before['time_to_first_token_ms']:.1f} ms",
                         f"{after['time_to_first_token_ms']:.1f} ms"])
            rows.append([f"Decode tokens/s, {label}", f"{before['decode_tokens_per_s']:,.0f}",
                         f"{after['decode_tokens_per_s']:,.0f}"])
    if original["quality"] and result["quality"]:
        for metric in ("accuracy", "macro_f1"):
            rows.append([metric, f"{original['quality'][metric]:.4f}", f"{result['quality'][metric]:.4f}"])
    for name, pair in (report.get("perplexity") or {}).items():
        label = _PERPLEXITY_LABELS[name]
        rows.append([f"{label} ({pair['tokens']:,} tokens, window {pair['window']})", f"{pair['original']:.3f}",
                     f"{pair['result']:.3f} ({pair['relative_increase']:+.2%})"])
    fidelity = report["fidelity"]
    for name, value in fidelity["metrics"].items():
        marker = " (primary)" if name == fidelity["primary_metric"] else ""
        rows.append([f"Fidelity {name}{marker}", "reference", f"{value:.4f}"])
    ratios = report["ratios"]
    summary = f"Compression ratio {ratios['compression_ratio']:.2f}x"
    if ratios["speedup"]:
        summary += "; speedup " + ", ".join(f"{key}: {value:.2f}x" for key, value in ratios["speedup"].items())
    return "## Before and after\n\n" + _table(["", "Original", "Compressed"], rows) + f"\n\n{summary}."


def _slices(report: dict[str, Any]) -> str | None:
    section = report.get("slices")
    if not section or section["source"] is None:
        return None
    overall = section["overall"]
    text = (
        f"## Quality by slice\n\nPer {section['source']}, {section['metric']} before and after compression "
        f"(overall: {overall['before']:.4f} -> {overall['after']:.4f}, drop {overall['drop']:.4f}). A slice is "
        f"**flagged** when its drop exceeds the overall drop by more than {section['margin']}; compression "
        f"tends to hurt rare groups first. Slices under {section['min_rows']} rows are marked small: "
        "one row moves them a lot.\n\n"
    )
    rows = []
    for item in sorted(section["slices"], key=lambda entry: (not entry["flagged"], -entry["drop"], entry["name"])):
        name = f"**{item['name']}**" if item["flagged"] else item["name"]
        notes = ", ".join(note for note, on in (("**flagged**", item["flagged"]), ("small", item["small"])) if on)
        scores = [f"{item[key]:.4f}" for key in ("before", "after", "drop")]
        rows.append([name, item["count"], *scores, notes])
    text += _table(["slice", "rows", "before", "after", "drop", ""], rows)
    if section["flagged"]:
        text += "\n\nFlagged: " + ", ".join(_cell(name) for name in section["flagged"]) + "."
    return text


def _job_energy(energy: dict[str, Any]) -> str:
    total, inputs = energy.get("total") or {}, energy.get("inputs") or {}
    grid = inputs.get("country") or "world average"
    return (
        f"This compression job used {_number(total.get('energy_kwh'))} kWh, {_number(total.get('co2e_g'))} g CO2e "
        f"({energy.get('method')}; grid {grid} at {_number(inputs.get('carbon_intensity_g_per_kwh'))} g/kWh, "
        f"PUE {_number(inputs.get('pue'))})."
    )


def _inference_energy(inference: dict[str, Any]) -> str:
    original, result = inference.get("original"), inference.get("result")
    if inference.get("method") in _NO_FIGURES or not original or not result:
        return f"Inference energy was not measured ({inference.get('error') or inference.get('method')})."
    rows = [
        [side_name, side["runtime"], f"{side['kwh_per_1000_mean']:.4g} ± {side['kwh_per_1000_std']:.2g}"]
        for side_name, side in (("Original", original), ("Compressed", result))
    ]
    return (
        f"Device energy per 1,000 inferences (batch {inference.get('batch_size')} x "
        f"{inference.get('sequence_length')} tokens, {inference.get('device')}):\n\n"
        + _table(["", "runtime", "kWh per 1,000 (mean ± sd)"], rows)
    )


def _payback(payback: dict[str, Any]) -> str:
    keys = ("break_even_inferences", "break_even_days", "carbon_break_even_inferences", "carbon_break_even_days",
            "saving_kwh_per_million", "saving_co2e_g_per_million")
    rows = [[key, _number(payback[key])] for key in keys if payback.get(key) is not None]
    text = f"Payback: **{payback.get('verdict')}**. {payback.get('explanation') or ''}".rstrip()
    return text + ("\n\n" + _table(["", "value"], rows) if rows else "")


def _sustainability(report: dict[str, Any]) -> str | None:
    energy = _energy(report)
    parts = [_job_energy(energy)] if energy is not None else []
    if isinstance(report.get("inference"), dict):
        parts.append(_inference_energy(report["inference"]))
    if isinstance(report.get("payback"), dict):
        parts.append(_payback(report["payback"]))
    generation = report.get("generation_energy")
    if isinstance(generation, dict) and generation["original"] and generation["result"]:
        parts.append(
            f"Generating ({generation['batch_size']} prompts of {generation['prompt_tokens']} tokens, "
            f"{generation['new_tokens']} new tokens each, on {generation['device']}): "
            f"{generation['original']['kwh_per_1000_mean']:.3g} kWh per 1,000 generated tokens before, "
            f"{generation['result']['kwh_per_1000_mean']:.3g} after. {generation['payback']['explanation']}"
        )
    return "\n\n".join(["## Energy and payback", *parts]) if parts else None


def build_model_card(report: dict[str, Any], dataset_sha256: str | None) -> str:
    """README.md text for the package, from the report as written to report.json."""
    # A wide line limit keeps each value on one line, as people write these blocks by hand.
    front_matter = yaml.safe_dump(card_metadata(report), sort_keys=False, allow_unicode=True, width=1000)
    model = report["model"]
    shipped = {
        "transformers": "saved as a transformers folder (safetensors) for PyTorch",
        "executorch": "exported to an ExecuTorch program (.pte) for phones and edge CPUs",
    }.get(_library(report), "exported to a single ONNX file for onnxruntime")
    intro = (
        f"# {model['architecture']} ({model['model_type']}), compressed with compresso\n\n"
        f"A {model['task']} model compressed by compresso and {shipped}, measured on "
        f"{report['result']['runtime']} on {report['result']['latency']['device']}. The original model's Hub id is not "
        "known to compresso, so `base_model` is not set: add it before publishing. Every figure below comes from "
        "`report.json` in this package."
    )
    environment = report["environment"]
    provenance = (
        f"## Provenance\n\nCreated {report['created_at']} on {report['job']['device']} "
        f"(python {environment['python']}, torch {environment['torch']}, transformers {environment['transformers']}, "
        f"onnxruntime {environment['onnxruntime']})."
    )
    files = "## Files\n\n" + _table(
        ["file", "read by", "what"], [[item["path"], item["runtime"], item["description"]] for item in report["files"]]
    )
    sections = [
        intro, _recipe(report), _usage(report), _evaluation_data(report, dataset_sha256), _results(report),
        _slices(report), _sustainability(report), footprint_section(report), provenance, files,
    ]
    return f"---\n{front_matter}---\n\n" + "\n\n".join(section for section in sections if section) + "\n"
