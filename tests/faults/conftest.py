"""A model archive shared by the fault tests."""

import pytest

from tests.archives import zip_folder
from tests.factories import build_tiny_model


@pytest.fixture(scope="module")
def model_archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    return zip_folder(build_tiny_model("encoder", root / "model", hidden_size=64), root / "model.zip")
