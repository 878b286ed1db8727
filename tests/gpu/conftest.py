"""GPU tests: every technique and preset as a cuda job. CI has no GPU, so they skip there and say
why; `python -m pytest -m gpu tests/gpu` runs them on a GPU machine (docs/gpu.md)."""

import pytest
import torch

NO_GPU = "no CUDA device here: these tests run on a GPU machine (python -m pytest -m gpu tests/gpu; see docs/gpu.md)"


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/gpu/" in str(item.fspath):
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available():
                item.add_marker(pytest.mark.skip(reason=NO_GPU))
