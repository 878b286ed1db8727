"""What the API does once at start-up, before the first request."""

import gc
import subprocess
import sys

from fastapi.testclient import TestClient

from app.main import create_app


def test_startup_objects_are_kept_out_of_garbage_collections(database):
    gc.unfreeze()
    with TestClient(create_app()):
        # Modules, routes and schemas live as long as the process: full collections skip them.
        assert gc.get_freeze_count() > 10_000


def test_the_technique_configs_are_loaded_before_the_first_request(database):
    script = """
import sys
from fastapi.testclient import TestClient
from app.main import create_app
assert "workers.engine.techniques" not in sys.modules
with TestClient(create_app()):
    assert "workers.engine.techniques" in sys.modules
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
