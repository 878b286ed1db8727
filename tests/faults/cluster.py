"""Real compresso processes for fault tests: an API and workers that a test can kill, restart and
point at brokers and databases it controls."""

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.integration import harness

# Fast failure detection, so that a lost worker is noticed in seconds rather than a minute.
FAST_RECOVERY = {
    "COMPRESSO_HEARTBEAT_STALE_SECONDS": "4",
    "COMPRESSO_RECONCILE_SECONDS": "1",
    "COMPRESSO_RECONCILE_GRACE_SECONDS": "2",
    "COMPRESSO_CANCEL_POLL_SECONDS": "0.5",
}
# A job of ten seconds or so on a tiny model: long enough to be hit mid-way, short enough to rerun.
STEADY_EVALUATION = {"max_samples": 16, "sequence_length": 128, "latency_warmup": 1, "latency_repeats": 300,
                     "latency_batch_sizes": [32], "energy_repeats": 2}
QUANTIZE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}


class Cluster:
    def __init__(self, logs: Path, env: dict[str, str] | None = None):
        self.logs = logs
        self.env = {**os.environ, **FAST_RECOVERY, **(env or {})}
        self.processes: list[subprocess.Popen] = []
        self.port = harness.free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"

    def start_api(self, wait: bool = True) -> subprocess.Popen:
        log = self.logs / f"api-{len(self.processes)}.log"
        process = harness.start(harness.compresso("api", "--port", str(self.port)), self.env, log)
        self.processes.append(process)
        if wait:
            harness.wait_ready(self.base_url, process, log)
        return process

    def start_worker(self, queues: str = "cpu") -> subprocess.Popen:
        process = harness.start(harness.compresso("worker", "--queues", queues), self.env,
                                self.logs / f"worker-{len(self.processes)}.log")
        self.processes.append(process)
        return process

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=60)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            harness.stop(process)


def kill(process: subprocess.Popen) -> None:
    """SIGKILL to the process's whole group, as a crash or `kill -9` would: no cleanup runs."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def engine_pids(job_id: str) -> list[int]:
    """The engine child processes running this job (their command line names its spec file)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "workers.tasks.engine_child" in command and f"jobs/{job_id}/" in command:
            found.append(int(entry.name))
    return found


def wait_until(condition, timeout: float = 120.0, every: float = 0.3):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {getattr(condition, '__name__', 'a condition')}")


def job_state(client: httpx.Client, job_id: str) -> dict:
    return client.get(f"/v1/jobs/{job_id}").json()


def log_lines(client: httpx.Client, job_id: str) -> list[str]:
    return [line["message"] for line in client.get(f"/v1/jobs/{job_id}/logs", params={"limit": 1000}).json()["lines"]]


def submit(client: httpx.Client, model_archive: Path, **extra) -> str:
    """Uploads the model and submits a steady quantize job on it; returns the job id."""
    model = harness.upload(client, "/v1/models", model_archive, "tiny")
    response = client.post("/v1/jobs", json={
        "model_id": model["id"], "recipe": QUANTIZE, "device": "cpu", "evaluation": STEADY_EVALUATION, **extra,
    })
    assert response.status_code == 202, response.text
    return response.json()["id"]
