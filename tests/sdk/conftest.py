"""One real `compresso serve` (SQLite, its own worker) for the SDK and CLI tests, and small inputs for it."""

import json
from pathlib import Path

import pytest
import yaml

from tests.factories import build_tiny_model
from tests.integration import harness

QUANTIZE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}
# Small enough that a job on the tiny model takes a few seconds.
FAST_EVALUATION = {
    "max_samples": 16, "sequence_length": 32, "batch_size": 16, "latency_warmup": 1, "latency_repeats": 2,
    "latency_batch_sizes": [1], "energy_repeats": 2, "energy_batch_size": 8, "energy_inferences_per_run": 8,
}
# Keeps the single worker busy far longer than any test waits: for timeouts and cancellation.
SLOW_EVALUATION = {**FAST_EVALUATION, "latency_repeats": 10000, "latency_batch_sizes": [32]}


@pytest.fixture(scope="package")
def server_url(tmp_path_factory) -> str:
    with harness.embedded_server(tmp_path_factory.mktemp("serve")) as server:
        yield server.base_url


@pytest.fixture(scope="package")
def model_folder(tmp_path_factory) -> Path:
    return build_tiny_model("encoder", tmp_path_factory.mktemp("model") / "tiny-encoder", hidden_size=32)


@pytest.fixture(scope="package")
def dataset_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dataset") / "sentences.jsonl"
    rows = [{"text": f"sentence number {i} about the {topic}", "slice": topic}
            for i, topic in enumerate(["news", "chat"] * 12)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="package")
def recipe_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "recipe.yaml"
    path.write_text(yaml.safe_dump(QUANTIZE))
    return path


@pytest.fixture(scope="package")
def model_id(server_url, model_folder) -> str:
    """The tiny encoder, uploaded once for the tests that only need one to exist."""
    from compresso import Client

    with Client(server_url) as client:
        return client.upload_model(model_folder, "shared-encoder").id
