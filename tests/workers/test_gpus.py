"""gpu workers: one process per GPU, pinned with CUDA_VISIBLE_DEVICES; a gpu worker on a machine with
no GPU stops at start and says why."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workers import gpus

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_one_worker_per_gpu_counted_or_made_visible():
    assert gpus.worker_plan(0, None) == []
    assert gpus.worker_plan(4, None) == ["0", "1", "2", "3"]
    # The operator's own selection wins, indices or UUIDs, one worker each.
    assert gpus.worker_plan(8, "2, 5") == ["2", "5"]
    assert gpus.worker_plan(1, "GPU-6f1c0b3e-aaaa-bbbb-cccc-0123456789ab") == ["GPU-6f1c0b3e-aaaa-bbbb-cccc-0123456789ab"]
    assert gpus.worker_plan(2, " ") == ["0", "1"]


@pytest.mark.skipif(gpus.gpu_count() > 0, reason="this machine has a GPU, so a gpu worker would start")
def test_a_gpu_worker_without_a_gpu_stops_at_start_with_the_reason():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    completed = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker", "--queues", "gpu"], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode != 0
    assert "no GPU is visible here" in completed.stderr
