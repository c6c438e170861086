"""Weights between Python and C++ (issue 32): RevNet-38 from this package's trainer into memcnn-train and
back (python/tools/memcnn_weights_roundtrip.py; the same against MemCNN 1.5.2 itself when MEMCNN_SOURCE
names a checkout of it), the files memcnn-train writes opened with torch.load(weights_only=True), and a
reversible block defined in Python loaded into the same C++ block (examples/weights_from_python.py with
the program memcnn-example-weights-from-python).

The programs come from the environment (ctest sets MEMCNN_TRAIN and MEMCNN_EXAMPLE_WEIGHTS_FROM_PYTHON)
or from the build folder (BUILD_DIR, default build/)."""

import importlib.util
import os
import subprocess

import pytest
import torch

import memcnn

HERE = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = os.path.normpath(os.path.join(HERE, "..", ".."))
PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(memcnn.__file__)))
# Small enough for the suite (about 30 s): 3 iterations of batch 20 on 100 images, 100 test images.
SIZES = ["--iterations", "3", "--batch-size", "20", "--train-images", "100", "--test-images", "100", "--threads", "1"]


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def program(variable, name):
    """The program's path from the environment variable, else from the build folder; skips without it."""
    path = os.environ.get(variable) or os.path.join(REPOSITORY, os.environ.get("BUILD_DIR", "build"), name)
    if not os.access(path, os.X_OK):
        pytest.skip("{} not found: build it, or set {} (ctest does)".format(name, variable))
    return path


@pytest.fixture(scope="module")
def roundtrip_tool():
    return load("memcnn_weights_roundtrip", os.path.join(REPOSITORY, "python", "tools", "memcnn_weights_roundtrip.py"))


@pytest.fixture(scope="module")
def example_script():
    return load("weights_from_python", os.path.join(REPOSITORY, "examples", "weights_from_python.py"))


def run_roundtrip(tool, python_source, work):
    args = tool.parse([python_source, "--memcnn-train", program("MEMCNN_TRAIN", "memcnn-train"), "--package", PACKAGE,
                       "--work", str(work)] + SIZES)
    checks = tool.roundtrip(args)
    return checks


@pytest.fixture(scope="module")
def roundtrip(roundtrip_tool, tmp_path_factory):
    """This package as the Python side: its trainer (python -m memcnn.train) and its RevNet-38."""
    work = tmp_path_factory.mktemp("roundtrip")
    return run_roundtrip(roundtrip_tool, PACKAGE, work), work


def test_roundtrip_with_this_package(roundtrip):
    checks, _ = roundtrip
    assert checks.passed(), "\n" + checks.table()
    names = [row[0] for row in checks.rows]
    # Both directions, the fine-tuning and every comparison ran.
    assert sum("max relative logit difference" in name for name in names) == 4
    assert sum("fine-tuning in C++: loss of step" in name for name in names) == 2


@pytest.mark.skipif(not os.environ.get("MEMCNN_SOURCE"),
                    reason="MEMCNN_SOURCE does not name a checkout of MemCNN 1.5.2 (not part of this repository; "
                           "git --git-dir=MIRROR archive 1.5.2 | tar -x -C DIR)")
def test_roundtrip_with_memcnn_1_5_2(roundtrip_tool, tmp_path):
    checks = run_roundtrip(roundtrip_tool, os.environ["MEMCNN_SOURCE"], tmp_path)
    assert checks.passed(), "\n" + checks.table()


def test_exported_weights_open_with_weights_only_and_match_the_python_model(roundtrip, roundtrip_tool):
    _, work = roundtrip
    exported = torch.load(str(work / "cpp-weights.pt"), weights_only=True)
    model, _ = roundtrip_tool.python_revnet38(PACKAGE)
    expected = model.state_dict()
    # The same names (their order need not be Python's: load_state_dict goes by name; the C++ coupling
    # registers F before G, MemCNN's Gm before Fm).
    assert sorted(exported) == sorted(expected)
    for name, tensor in expected.items():
        assert exported[name].dtype == tensor.dtype and exported[name].shape == tensor.shape, name
    assert exported["bn1.num_batches_tracked"].item() == 3  # memcnn-train's 3 iterations


def test_logits_files_open_with_weights_only(roundtrip):
    _, work = roundtrip
    for name in ("cpp-logits-of-python-weights.pt", "cpp-logits-of-cpp-weights.pt", "cpp-logits-of-own-checkpoint.pt"):
        logits = torch.load(str(work / name), weights_only=True)
        assert sorted(logits) == ["labels", "logits"]
        assert logits["logits"].dtype == torch.float32 and logits["logits"].shape == (100, 10)
        assert logits["labels"].dtype == torch.int64 and logits["labels"].shape == (100,)


def test_example_loads_a_python_block_into_cpp(example_script, tmp_path):
    forward, inverse = example_script.run(program("MEMCNN_EXAMPLE_WEIGHTS_FROM_PYTHON",
                                                  "memcnn-example-weights-from-python"), str(tmp_path))
    assert forward <= example_script.TOLERANCE and inverse <= example_script.TOLERANCE


def run_example(tmp_path, state):
    """The example on a block file holding `state` (and the io file the script wrote)."""
    torch.save(state, str(tmp_path / "changed.pt"))
    return subprocess.run([program("MEMCNN_EXAMPLE_WEIGHTS_FROM_PYTHON", "memcnn-example-weights-from-python"),
                           str(tmp_path / "changed.pt"), str(tmp_path / "io.pt")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_example_notices_other_weights(example_script, tmp_path):
    """F's and G's weights exchanged: the names still fit, the outputs do not."""
    example_script.write(str(tmp_path))
    state = torch.load(str(tmp_path / "block.pt"))
    swapped = {name.replace("Fm", "G_").replace("Gm", "Fm").replace("G_", "Gm"): t for name, t in state.items()}
    result = run_example(tmp_path, swapped)
    assert result.returncode == 1 and "DIFFER" in result.stdout, result.stdout


def test_example_refuses_a_block_file_with_a_missing_tensor(example_script, tmp_path):
    example_script.write(str(tmp_path))
    state = torch.load(str(tmp_path / "block.pt"))
    del state["_fn.Gm.seq.1.running_var"]
    result = run_example(tmp_path, state)
    assert result.returncode == 1 and "_fn.Gm.seq.1.running_var" in result.stdout, result.stdout
