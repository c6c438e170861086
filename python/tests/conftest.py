import os
import sys

import pytest
import torch

# Running from the source tree without an installed package: use the build's staged copy when
# PYTHONPATH does not already provide memcnn (ctest sets it).
try:
    import memcnn  # noqa: F401
except ImportError:  # pragma: no cover
    here = os.path.dirname(os.path.abspath(__file__))
    staged = os.path.join(here, "..", "..", os.environ.get("BUILD_DIR", "build"), "python", "site")
    sys.path.insert(0, os.path.abspath(staged))


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)
    yield
