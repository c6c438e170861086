"""python/tools/run_memcnn_suite.py, which runs MemCNN's own test suite (kept outside this repository)
against this package: its overlay holds this package's modules and only MemCNN's tests, and its
classification names every expected exception."""

import importlib.util
import os

import pytest

import memcnn

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "run_memcnn_suite.py")


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("run_memcnn_suite", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_memcnn(root, extra_tests=()):
    """A MemCNN-like source tree: package modules (which must not be copied) and tests folders."""
    for relative, text in [("memcnn/__init__.py", "MEMCNN_ITSELF = True\n"),
                           ("memcnn/models/revop.py", "MEMCNN_ITSELF = True\n"),
                           ("memcnn/models/tests/__init__.py", ""),
                           ("memcnn/models/tests/test_revop.py", "def test_x():\n    pass\n"),
                           ("memcnn/trainers/tests/resources/experiments.json", "{}"),
                           ("memcnn/examples/minimal.py", "X = 1\n")] + list(extra_tests):
        path = os.path.join(str(root), relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def test_overlay_holds_our_modules_and_memcnns_tests_only(tmp_path, runner):
    fake_memcnn(tmp_path / "src")
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(memcnn.__file__)))
    copied = runner.build_overlay(str(tmp_path / "src"), package_dir, str(tmp_path / "work"))
    assert copied == ["examples", os.path.join("models", "tests"), os.path.join("trainers", "tests")]
    work = tmp_path / "work" / "memcnn"
    assert "MEMCNN_ITSELF" not in (work / "__init__.py").read_text()
    assert "MEMCNN_ITSELF" not in (work / "models" / "revop.py").read_text()
    assert (work / "models" / "resnet.py").exists() and (work / "config" / "experiments.json").exists()
    assert (work / "models" / "tests" / "test_revop.py").exists()
    assert (work / "trainers" / "tests" / "resources" / "experiments.json").exists()


def test_overlay_refuses_tests_of_a_module_we_lack(tmp_path, runner):
    fake_memcnn(tmp_path / "src", [("memcnn/visualisation/tests/test_plot.py", "")])
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(memcnn.__file__)))
    with pytest.raises(SystemExit, match="memcnn.visualisation, which this package lacks"):
        runner.build_overlay(str(tmp_path / "src"), package_dir, str(tmp_path / "work"))


def test_every_exception_has_a_reason(runner):
    assert "download" in runner.classify("trainers/tests/test_classification.py::test_train",
                                         "urllib.error.URLError: <urlopen error [Errno -2] Name or service not known>")
    for nodeid in runner.DEVIATIONS:
        assert runner.classify(nodeid, "assert False").startswith("deviation")
    assert "flaky" in runner.classify("models/tests/test_revop.py::test_invertible_module_wrapper_fwd_bwd"
                                      "[False-True-False-True-fn1]", "where False = <built-in method allclose")
    assert runner.classify("models/tests/test_revop.py::test_invertible_module_wrapper_fwd_bwd"
                           "[False-True-False-True-fn0]", "allclose") is None
    assert runner.classify("models/tests/test_couplings.py::test_x", "assert 1 == 2") is None
