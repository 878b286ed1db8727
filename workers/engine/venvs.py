"""The isolated virtualenvs that `make install` builds beside the running one (.venv-llm, .venv-federated,
.venv-boavizta): libraries whose pins fight the service's run there, as subprocesses. Light on purpose:
workers import it at start-up, and it must not pull in torch."""

import os
import sys
from pathlib import Path

# Where `workers` lives: a subprocess in another venv imports the engine's modules from here.
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def sibling_venv_python(name: str) -> Path:
    """The interpreter of the venv `name` beside the running venv (the layout `make install` makes)."""
    return Path(sys.prefix).parent / name / "bin" / "python"


def repository_env(**extra: str) -> dict[str, str]:
    """This process's environment, with the repository first on PYTHONPATH, for a subprocess in another venv."""
    path = os.pathsep.join(filter(None, [str(REPOSITORY_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **extra, "PYTHONPATH": path}
