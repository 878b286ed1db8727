"""Starts and stops real compresso processes for end-to-end tests, and talks to them over HTTP."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
FINISHED = ("succeeded", "failed", "cancelled", "timed_out")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = log_path.open("wb")
    # Its own process group, so a test can signal it (and its children) like a terminal would.
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def compresso(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def wait_ready(
    base_url: str, process: subprocess.Popen | None, log_path: Path | None, timeout: float = 120, path: str = "/readyz"
) -> None:
    """Until GET path answers 200; the process (None: one this test did not start) must not exit meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base_url}{path}", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{base_url} not ready after {timeout}s:\n{log_path.read_text()[-4000:] if log_path else ''}")


def upload(client: httpx.Client, route: str, path: Path, name: str) -> dict:
    with path.open("rb") as handle:
        response = client.post(route, files={"file": (path.name, handle)}, data={"name": name})
    assert response.status_code == 201, response.text
    return response.json()


def wait_for_status(client: httpx.Client, job_id: str, statuses, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not reach {statuses} in {timeout}s: {job}")


def download(client: httpx.Client, artifact: dict, dest: Path) -> Path:
    with client.stream("GET", f"/v1/artifacts/{artifact['id']}") as response:
        assert response.status_code == 200
        assert int(response.headers["content-length"]) == artifact["size_bytes"]
        assert response.headers["x-content-sha256"] == artifact["sha256"]
        with dest.open("wb") as handle:
            for chunk in response.iter_bytes():
                handle.write(chunk)
    return dest


def processes_using(data_dir: Path) -> list[int]:
    """Pids whose environment points at this data dir: a serve process and the worker it started."""
    marker = f"COMPRESSO_DATA_DIR={data_dir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def embedded_env(data_dir: Path, port: int) -> dict[str, str]:
    """The environment of a user running the embedded default: no COMPRESSO_ setting but these two."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPRESSO_")}
    env.update(COMPRESSO_DATA_DIR=str(data_dir), COMPRESSO_PORT=str(port))
    return env


@contextmanager
def distributed_service(
    logs: Path, worker_queues: tuple[str, ...] = ("cpu",), env: dict[str, str] | None = None
) -> Iterator[httpx.Client]:
    """`compresso api` and one `compresso worker` per entry of `worker_queues`, as separate processes
    on the test's Postgres and Redis; a client of the API while they run."""
    port = free_port()
    env = {**os.environ, **(env or {})}
    processes = [
        start(compresso("worker", "--queues", queues, "--concurrency", "4" if queues == "webhooks" else "1"), env,
              logs / f"worker-{queues}.log")
        for queues in worker_queues
    ]
    api_log = logs / "api.log"
    processes.append(start(compresso("api", "--port", str(port)), env, api_log))
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, processes[-1], api_log)
        with httpx.Client(base_url=base_url, timeout=60) as client:
            yield client
    finally:
        for process in reversed(processes):
            stop(process)


@dataclass(frozen=True)
class EmbeddedServer:
    base_url: str
    data_dir: Path
    process: subprocess.Popen
    log: Path


@contextmanager
def embedded_server(root: Path, timeout: float = 300, env: dict[str, str] | None = None) -> Iterator[EmbeddedServer]:
    """`compresso serve` on its own data dir and port under `root`; stopped like Ctrl-C on exit, and any
    worker that outlived it killed."""
    data_dir, port, log = root / "data", free_port(), root / "serve.log"
    process = start(compresso("serve"), {**embedded_env(data_dir, port), **(env or {})}, log)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, process, log, timeout=timeout)
        yield EmbeddedServer(base_url, data_dir, process, log)
    finally:
        stop(process, signal.SIGINT)
        for pid in processes_using(data_dir):
            os.kill(pid, signal.SIGKILL)
