"""A causal LM over 2 GiB, uploaded as users upload them: sharded safetensors with their index, streamed
through the API and extracted, with no 2 GiB limit on the way. The shards are zeros (sparse files,
deflated to almost nothing), so the test moves little data but every size check sees the real sizes."""

import json
import struct
import zipfile

from tests.app.conftest import client, upload  # noqa: F401 - the shared fixture

SHARD_ELEMENTS = 600 * 2**20  # bf16: 1.17 GiB per shard, 2.34 GiB in all


def _zero_shard(path, name):
    header = json.dumps({name: {"dtype": "BF16", "shape": [SHARD_ELEMENTS], "data_offsets": [0, SHARD_ELEMENTS * 2]}})
    header = header.encode() + b" " * (-len(header) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header)
        handle.truncate(8 + len(header) + SHARD_ELEMENTS * 2)  # a sparse file: zeros without writing them


def _sharded_llama(folder):
    folder.mkdir()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(config))
    weight_map = {}
    for index in (1, 2):
        name = f"model-0000{index}-of-00002.safetensors"
        _zero_shard(folder / name, f"model.layers.{index}.mlp.up_proj.weight")
        weight_map[f"model.layers.{index}.mlp.up_proj.weight"] = name
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def test_a_sharded_causal_lm_over_2_gib_is_accepted(client, tmp_path):  # noqa: F811
    folder = _sharded_llama(tmp_path / "llama")
    archive = tmp_path / "llama.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zipped:
        for path in sorted(folder.iterdir()):
            zipped.write(path, f"model/{path.name}")
    response = upload(client, archive, name="llama-2.3g")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["task"] == "text-generation" and body["num_parameters"] == 2 * SHARD_ELEMENTS
    assert body["size_bytes"] > 2 * 2**30
