"""A client machine needs httpx, pyyaml and tqdm only: the SDK and its CLI import nothing of the server."""

import subprocess
import sys

from tests.integration.harness import ROOT

SERVER_SIDE = {"app", "workers", "torch", "sqlalchemy", "celery"}


def test_the_sdk_and_its_commands_import_nothing_of_the_server():
    code = (
        "import compresso, compresso.cli, sys; "
        f"loaded = sorted({{m.split('.')[0] for m in sys.modules}} & {SERVER_SIDE!r}); "
        "assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_client_commands_run_alone():
    result = subprocess.run(
        [sys.executable, "-m", "compresso", "jobs", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "submit" in result.stdout and "watch" in result.stdout
