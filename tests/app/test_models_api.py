"""Model uploads through the API: what is accepted, what is refused, and that a refusal stores nothing."""

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open

from app.core.deps import settings_dependency
from app.config import Settings
from tests.app.conftest import stored_files, upload
from tests.archives import tar_folder, tar_with_symlink, zip_folder, zip_with_extra


def count_parameters(folder) -> int:
    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), "pt") as weights:
            for name in weights.keys():
                total += weights.get_tensor(name).numel()
    return total


def test_upload_zip_describes_the_model(client, tiny_encoder_zip, tiny_encoder_dir):
    response = upload(client, tiny_encoder_zip, name="tiny encoder")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "tiny encoder"
    assert body["status"] == "ready"
    assert body["architecture"] == "BertModel"
    assert body["model_type"] == "bert"
    assert body["task"] == "feature-extraction"
    assert body["num_parameters"] == count_parameters(tiny_encoder_dir)
    assert body["sha256"] == hashlib.sha256(tiny_encoder_zip.read_bytes()).hexdigest()
    assert body["size_bytes"] == sum(p.stat().st_size for p in tiny_encoder_dir.rglob("*") if p.is_file())

    assert client.get(f"/v1/models/{body['id']}").json() == body
    assert [m["id"] for m in client.get("/v1/models").json()["items"]] == [body["id"]]


def test_upload_tar_gz(client, tiny_encoder_dir, tmp_path):
    response = upload(client, tar_folder(tiny_encoder_dir, tmp_path / "model.tar.gz"))
    assert response.status_code == 201, response.text
    assert response.json()["architecture"] == "BertModel"


def test_delete_removes_row_and_files(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    assert any(model_id in str(p) for p in stored_files())
    assert client.delete(f"/v1/models/{model_id}").status_code == 204
    assert client.get(f"/v1/models/{model_id}").status_code == 404
    assert not any(model_id in str(p) for p in stored_files())


def assert_refused(response, status: int, *phrases: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for phrase in phrases:
        assert phrase in detail, detail


def assert_nothing_stored(client) -> None:
    assert stored_files() == []
    assert client.get("/v1/models").json()["items"] == []


def test_pickle_checkpoint_is_refused_with_conversion_hint(client, tiny_encoder_dir, tmp_path):
    archive = zip_with_extra(tiny_encoder_dir, tmp_path / "m.zip", {"pytorch_model.bin": b"\x80\x04not unpickled"})
    assert_refused(upload(client, archive), 422, "pytorch_model.bin", "safetensors")
    assert_nothing_stored(client)


class MarkerPayload:
    """Unpickling this runs `open(marker, "w")`: the marker proves whether anything unpickled it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "last.ckpt", "model.safetensors"])
def test_a_pickle_payload_is_refused_and_never_runs(client, tiny_encoder_dir, tmp_path, name):
    marker = tmp_path / "unpickled-marker"
    payload = pickle.dumps(MarkerPayload(marker))
    folder = tmp_path / "model"
    shutil.copytree(tiny_encoder_dir, folder)
    if name.endswith(".safetensors"):
        for weights in folder.glob("*.safetensors"):
            weights.unlink()  # the pickle hides under the weights' own name
    (folder / name).write_bytes(payload)
    response = upload(client, zip_folder(folder, tmp_path / "m.zip"))
    assert response.status_code == 422, response.text
    assert name in response.json()["detail"]
    assert not marker.exists()
    assert_nothing_stored(client)


def test_custom_code_is_refused(client, tiny_encoder_dir, tmp_path):
    archive = zip_with_extra(tiny_encoder_dir, tmp_path / "m.zip", {"modeling_evil.py": b"import os"})
    assert_refused(upload(client, archive), 422, "modeling_evil.py", "trust_remote_code")
    assert_nothing_stored(client)


def test_auto_map_is_refused(client, tiny_encoder_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_encoder_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    assert_refused(upload(client, zip_folder(folder, tmp_path / "m.zip")), 422, "auto_map")
    assert_nothing_stored(client)


def test_missing_safetensors_is_refused(client, tiny_encoder_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_encoder_dir, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    assert_refused(upload(client, zip_folder(folder, tmp_path / "m.zip")), 422, "safetensors")
    assert_nothing_stored(client)


def test_path_traversal_is_refused(client, tiny_encoder_dir, tmp_path):
    archive = zip_with_extra(tiny_encoder_dir, tmp_path / "m.zip", {"../escape.txt": b"x"})
    assert_refused(upload(client, archive), 422, "..")
    assert_nothing_stored(client)
    assert not (tmp_path.parent / "escape.txt").exists()


def test_absolute_path_is_refused(client, tiny_encoder_dir, tmp_path):
    archive = zip_with_extra(tiny_encoder_dir, tmp_path / "m.zip", {"/tmp/compresso-absolute.txt": b"x"})
    assert_refused(upload(client, archive), 422, "compresso-absolute.txt")
    assert_nothing_stored(client)


def test_symlink_is_refused(client, tiny_encoder_dir, tmp_path):
    archive = tar_with_symlink(tiny_encoder_dir, tmp_path / "m.tar.gz", "vocab_link.txt", "/etc/passwd")
    assert_refused(upload(client, archive), 422, "vocab_link.txt")
    assert_nothing_stored(client)


def test_upload_over_the_limit_is_413_and_leaves_nothing(client, tiny_encoder_zip):
    client.app.dependency_overrides[settings_dependency] = lambda: Settings(limits={"upload_max_bytes": 1024})
    response = upload(client, tiny_encoder_zip)
    assert_refused(response, 413, "COMPRESSO_LIMITS__UPLOAD_MAX_BYTES")
    assert_nothing_stored(client)


def test_a_chunked_upload_without_content_length_is_cut_at_the_limit(client, tiny_encoder_zip):
    client.app.dependency_overrides[settings_dependency] = lambda: Settings(limits={"upload_max_bytes": 64 * 1024})
    boundary = "chunkedBoundary"
    sent = {"bytes": 0}

    def body():  # no Content-Length: httpx sends it chunked, so only the streamed count can stop it
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nbig\r\n--{boundary}\r\n"
               'Content-Disposition: form-data; name="file"; filename="m.zip"\r\n\r\n').encode()
        for _ in range(64):  # 4 MiB in all, far past the 64 KiB limit
            sent["bytes"] += 64 * 1024
            yield b"\0" * (64 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post("/v1/models", content=body(),
                           headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert_refused(response, 413, "COMPRESSO_LIMITS__UPLOAD_MAX_BYTES")
    assert_nothing_stored(client)


def test_extracted_size_over_the_limit_is_413(client, tiny_encoder_zip):
    client.app.dependency_overrides[settings_dependency] = lambda: Settings(limits={"extracted_max_bytes": 4096})
    assert_refused(upload(client, tiny_encoder_zip), 413, "COMPRESSO_LIMITS__EXTRACTED_MAX_BYTES")
    assert_nothing_stored(client)


def test_too_many_files_is_refused(client, tiny_encoder_zip):
    client.app.dependency_overrides[settings_dependency] = lambda: Settings(limits={"archive_max_files": 2})
    response = upload(client, tiny_encoder_zip)
    assert response.status_code in (413, 422), response.text
    assert "2" in response.json()["detail"]
    assert_nothing_stored(client)


def test_not_an_archive_is_refused(client, tmp_path):
    bogus = tmp_path / "model.zip"
    bogus.write_bytes(b"this is not a zip file at all")
    assert upload(client, bogus).status_code == 422
    assert_nothing_stored(client)


def test_wrong_suffix_and_missing_name_are_refused(client, tiny_encoder_zip, tmp_path):
    renamed = tmp_path / "model.rar"
    shutil.copy(tiny_encoder_zip, renamed)
    assert_refused(upload(client, renamed), 422, ".zip")
    with tiny_encoder_zip.open("rb") as handle:
        response = client.post("/v1/models", files={"file": ("m.zip", handle)})
    assert_refused(response, 422, "name")
    assert_nothing_stored(client)


def test_unknown_model_is_404(client):
    assert client.get("/v1/models/doesnotexist").status_code == 404
    assert client.delete("/v1/models/doesnotexist").status_code == 404
