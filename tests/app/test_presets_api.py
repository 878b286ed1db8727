"""Named presets: listed with their full recipes, usable as {"preset": NAME}, and refused clearly
when unknown or given together with a recipe."""

from tests.app.conftest import upload
from workers.engine.presets import PRESETS
from workers.engine.recipe import Recipe


def test_presets_are_listed_with_valid_recipes(client):
    listed = client.get("/v1/recipes/presets").json()
    assert [item["name"] for item in listed] == [preset.name for preset in PRESETS]
    for item in listed:
        assert item["summary"]
        # What is listed is the normalised recipe a job would store.
        assert Recipe.from_dict(item["recipe"]).to_dict() == item["recipe"]


def test_a_job_can_name_a_preset(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    [first, *_] = PRESETS
    response = client.post("/v1/jobs", json={"model_id": model_id, "preset": first.name})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["preset"] == first.name
    assert job["recipe"] == Recipe.from_dict(first.recipe).to_dict()
    assert client.get(f"/v1/jobs/{job['id']}").json()["preset"] == first.name


def test_unknown_preset_lists_the_known_ones(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    response = client.post("/v1/jobs", json={"model_id": model_id, "preset": "tiny-magic"})
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["loc"] == ["body", "preset"]
    assert error["allowed"] == [preset.name for preset in PRESETS]


def test_recipe_and_preset_together_or_neither_is_refused(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    recipe = PRESETS[0].recipe
    for body in ({"model_id": model_id}, {"model_id": model_id, "recipe": recipe, "preset": PRESETS[0].name}):
        response = client.post("/v1/jobs", json=body)
        assert response.status_code == 422
        assert "exactly one of recipe" in response.json()["detail"]


def test_incoherent_recipe_says_why(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    recipe = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}},
                        {"technique": "low_rank", "params": {"energy": 0.9}}]}
    response = client.post("/v1/jobs", json={"model_id": model_id, "recipe": recipe})
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["loc"] == ["body", "recipe", "steps", 1, "technique"]
    assert "factorise before quantizing" in error["msg"]


def test_a_gpu_preset_brings_its_target_unless_the_job_gives_one(client, tiny_encoder_zip):
    from app.config import Settings
    from app.core.deps import settings_dependency

    model_id = upload(client, tiny_encoder_zip).json()["id"]
    listed = {item["name"]: item for item in client.get("/v1/recipes/presets").json()}
    assert listed["gpu-bf16"]["target"] == {"runtime": "torch", "device": "cuda"}
    assert listed["int8-lossless"]["target"] == {"runtime": "onnxruntime", "device": "cpu"}
    # No GPU worker serves this deployment: a preset meant for one is refused, and says why.
    refused = client.post("/v1/jobs", json={"model_id": model_id, "preset": "gpu-bf16"})
    assert refused.status_code == 422 and "target device is cuda" in refused.json()["detail"]
    # The job's own target wins: the same recipe, built for and measured on the CPU.
    on_cpu = client.post("/v1/jobs", json={"model_id": model_id, "preset": "gpu-bf16",
                                           "target": {"runtime": "torch", "device": "cpu"}})
    assert on_cpu.status_code == 202 and on_cpu.json()["target"] == {"runtime": "torch", "device": "cpu"}

    client.app.dependency_overrides[settings_dependency] = lambda: Settings(gpu_enabled=True)
    job = client.post("/v1/jobs", json={"model_id": model_id, "preset": "gpu-fp8"}).json()
    assert (job["device"], job["queue"], job["target"]) == ("cuda", "gpu", {"runtime": "torch", "device": "cuda"})
