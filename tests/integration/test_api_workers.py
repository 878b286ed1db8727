"""COMPRESSO_API_WORKERS: several API processes behind one port, for a server with several cores."""

import os
import signal
from pathlib import Path

import httpx

from tests.integration import harness


def api_processes(parent: int) -> list[int]:
    """The uvicorn worker processes of `compresso api` (started through multiprocessing's spawn)."""
    found = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        for child in (task / "children").read_text().split():
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"multiprocessing.spawn" in command:
                found.append(int(child))
    return found


def test_two_api_workers_serve_the_same_port_and_stop_together(database, tmp_path):
    port, log = harness.free_port(), tmp_path / "api.log"
    process = harness.start(harness.compresso("api", "--port", str(port)), {**os.environ, "COMPRESSO_API_WORKERS": "2"}, log)
    base_url = f"http://127.0.0.1:{port}"
    try:
        harness.wait_ready(base_url, process, log)
        workers = api_processes(process.pid)
        assert len(workers) == 2, log.read_text()[-2000:]
        with httpx.Client(base_url=base_url, timeout=30) as client:
            assert all(client.get("/v1/jobs").status_code == 200 for _ in range(20))
    finally:
        assert harness.stop(process, signal.SIGTERM) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
