import filecmp
import os
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.normpath(os.path.join(HERE, "..", "memcnn"))

# Running from the source tree without an installed package: use the build's staged copy when
# PYTHONPATH does not already provide memcnn (ctest sets it).
try:
    import memcnn  # noqa: F401
except ImportError:  # pragma: no cover
    staged = os.path.join(HERE, "..", "..", os.environ.get("BUILD_DIR", "build"), "python", "site")
    sys.path.insert(0, os.path.abspath(staged))
    import memcnn  # noqa: F401


def pytest_sessionstart(session):
    """A build's staged package older than these tests' sources fails clearly, not in odd ways."""
    package = os.path.dirname(os.path.abspath(memcnn.__file__))
    if os.path.basename(os.path.dirname(package)) != "site":
        return  # an installed package: the user's choice
    stale = []
    for folder, _, files in os.walk(SOURCE):
        for name in files:
            if name.endswith(".py"):
                source = os.path.join(folder, name)
                staged = os.path.join(package, os.path.relpath(source, SOURCE))
                if not os.path.exists(staged) or not filecmp.cmp(source, staged, shallow=False):
                    stale.append(os.path.relpath(source, SOURCE))
    if stale:
        pytest.exit("the package staged in {} is older than python/memcnn ({}); rebuild (cmake --build BUILD_DIR)"
                    .format(os.path.dirname(package), ", ".join(sorted(stale))), returncode=1)


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)
    yield
