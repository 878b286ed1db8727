"""The Dockerfile built and docker-compose.yml run for real, with podman: a key, an upload, a job on the
containerised cpu worker, and the download, through the published port; every service's own healthcheck
passes; nothing runs as root; the image's torch has no CUDA; `down` leaves no container behind.

`make test` runs it beside the engine's tests, and `make test-container` alone: the first build takes about
nine minutes, later ones reuse podman's layer cache. It is skipped, with the reason, only where no
container engine can start (`make install-container-engine` installs podman on Debian).
"""

import json
import secrets
import time
import zipfile

import httpx
import pytest

from tests.archives import zip_folder
from tests.container import podman as engine
from tests.factories import build_tiny_model
from tests.integration import harness

pytestmark = pytest.mark.container

ROOT = engine.ROOT
COMPRESSO_SERVICES = ("api", "worker-cpu", "worker-webhooks")
QUANTIZE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}


@pytest.fixture(scope="module")
def podman(tmp_path_factory) -> engine.Podman:
    found, why = engine.find_podman(tmp_path_factory.mktemp("podman"))
    if found is None:
        pytest.skip(f"no container engine can start here: {why}")
    engine.build_images(found)
    return found


def test_the_image_runs_as_a_user_with_a_cpu_only_torch(podman):
    assert podman.run("image", "inspect", "--format", "{{.Config.User}}", engine.COMPRESSO_IMAGE).stdout.strip() \
        == "compresso"
    probe = podman.run(
        "run", "--rm", engine.COMPRESSO_IMAGE, "python", "-c",
        "import json, os, torch, importlib.metadata as m;"
        "print(json.dumps({'uid': os.getuid(), 'cuda': torch.version.cuda,"
        " 'cuda_wheels': sorted(d.metadata['Name'] for d in m.distributions()"
        " if d.metadata['Name'].startswith(('nvidia-cu', 'nvidia-nccl', 'nvidia-nv'))),"
        " 'pythons': {v: os.path.exists(os.environ[v]) for v in"
        " ('COMPRESSO_LLM_PYTHON', 'COMPRESSO_FEDERATED_PYTHON', 'COMPRESSO_BOAVIZTA_PYTHON')}}))",
    )
    facts = json.loads(probe.stdout.strip().splitlines()[-1])
    assert facts["uid"] != 0
    assert facts["cuda"] is None and facts["cuda_wheels"] == []  # nvidia-ml-py (NVML) is no CUDA
    assert all(facts["pythons"].values()), facts


def test_compose_stack_upload_job_download(podman, tmp_path):
    project = f"compresso-test-{secrets.token_hex(3)}"
    override = tmp_path / "compose.override.yml"
    # Only the images of Postgres and Redis change: stand-ins where no registry answers (tests/container).
    override.write_text(
        f"services:\n  postgres:\n    image: {engine.POSTGRES_IMAGE}\n  redis:\n    image: {engine.REDIS_IMAGE}\n"
    )
    files = [ROOT / "docker-compose.yml", override]
    port = harness.free_port()
    env = {"COMPRESSO_PORT": str(port), "POSTGRES_PASSWORD": secrets.token_hex(8)}

    def compose(*args: str, timeout: float = 600):
        return podman.compose(project, files, *args, env=env, timeout=timeout)

    try:
        compose("up", "-d", "--no-build", "postgres", "redis")
        wait_healthy(podman, project, ("postgres", "redis"), timeout=120)
        # The README's first step: a migrated database and a key.
        created = compose("run", "--rm", "--no-deps", "api", "sh", "-c",
                          "compresso migrate >/dev/null && compresso keys create --tenant me --json")
        key = json.loads(created.stdout[created.stdout.index("{"):])["key"]
        compose("up", "-d", "--no-build")
        base_url = f"http://127.0.0.1:{port}"
        harness.wait_ready(base_url, None, None, timeout=240)
        # Every healthcheck the compose file declares passes (podman runs them on systemd timers, which a
        # machine without systemd lacks, so they are run here directly).
        wait_healthy(podman, project, (*COMPRESSO_SERVICES, "postgres", "redis"), timeout=180)
        for service in COMPRESSO_SERVICES:
            assert podman.run("exec", container(podman, project, service), "id", "-u").stdout.strip() != "0"

        with httpx.Client(base_url=base_url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
            assert httpx.get(f"{base_url}/v1/models", timeout=30).status_code == 401
            model_dir = build_tiny_model("encoder", tmp_path / "encoder", hidden_size=64)
            model = harness.upload(client, "/v1/models", zip_folder(model_dir, tmp_path / "encoder.zip"), "encoder")
            dataset_path = tmp_path / "texts.jsonl"
            dataset_path.write_text("".join(json.dumps({"text": f"sentence number {i} in a container"}) + "\n"
                                            for i in range(24)))
            dataset = harness.upload(client, "/v1/datasets", dataset_path, "texts")
            response = client.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": dataset["id"],
                                                     "recipe": QUANTIZE, "device": "cpu"})
            assert response.status_code == 202, response.text
            job = harness.wait_for_status(client, response.json()["id"], harness.FINISHED, timeout=600)
            assert job["status"] == "succeeded", (job, compose("logs", "worker-cpu").stdout[-4000:])
            artifact = next(artifact for artifact in job["artifacts"] if artifact["kind"] == "model")
            archive = harness.download(client, artifact, tmp_path / "model.zip")
            with zipfile.ZipFile(archive) as zipped:
                assert "model.onnx" in zipped.namelist()
            report = client.get(f"/v1/jobs/{job['id']}/report").json()
            assert report["result"]["size_bytes"] < report["original"]["size_bytes"]
    finally:
        compose("down", "--volumes", timeout=300)
    left = podman.run("ps", "--all", "--filter", f"label=io.podman.compose.project={project}",
                      "--format", "{{.Names}}").stdout.split()
    assert left == []


def container_names(podman: engine.Podman, project: str, service: str) -> list[str]:
    return podman.run("ps", "--filter", f"label=io.podman.compose.project={project}",
                      "--filter", f"label=com.docker.compose.service={service}", "--format", "{{.Names}}").stdout.split()


def container(podman: engine.Podman, project: str, service: str) -> str:
    names = container_names(podman, project, service)
    assert len(names) == 1, (service, names)
    return names[0]


def wait_healthy(podman: engine.Podman, project: str, services, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = set(services)
    while waiting and time.monotonic() < deadline:
        for service in sorted(waiting):
            names = container_names(podman, project, service)
            if names and podman.run("healthcheck", "run", names[0], check=False, timeout=60).returncode == 0:
                waiting.discard(service)
        time.sleep(2)
    assert not waiting, f"not healthy after {timeout}s: {sorted(waiting)}"

