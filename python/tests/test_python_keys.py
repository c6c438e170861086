"""The state_dict names and shapes of this package's models equal the committed lists that the C++
models' python_key_map is tested against (models/tests/data/python_keys, written by
python/tools/dump_state_dict_keys.py): weights move between Python and C++ by these names. The
ResNets' lists came from MemCNN 1.5.2 itself, so this package's ResNets keep MemCNN's names."""

import importlib.util
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TOOL = os.path.join(HERE, "..", "tools", "dump_state_dict_keys.py")
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "..", "models", "tests", "data", "python_keys"))


def load_tool():
    spec = importlib.util.spec_from_file_location("dump_state_dict_keys", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dump = load_tool()


def test_the_package_on_the_path_is_this_one():
    assert dump.package() == dump.OURS


@pytest.mark.parametrize("model,dataset", sorted(dump.SOURCES), ids=lambda v: str(v))
def test_state_dict_names_and_shapes_are_the_committed_ones(model, dataset):
    path = os.path.join(FIXTURES, dump.file_name(model, dataset))
    assert dump.read_lines(path) == dump.tensor_lines(model, dataset)


def test_every_fixture_is_one_the_tool_writes():
    written = {dump.file_name(m, d) for m, d in dump.SOURCES}
    assert set(os.listdir(FIXTURES)) == written


def test_the_tools_check_finds_a_changed_list(tmp_path, capsys):
    for name in os.listdir(FIXTURES):
        (tmp_path / name).write_text(open(os.path.join(FIXTURES, name)).read())
    assert dump.main([str(tmp_path), "--check"]) == 0
    changed = tmp_path / dump.file_name("revnet38", "cifar10")
    changed.write_text(changed.read_text().replace("revblock._fn.Fm", "revblock._fn.F"))
    assert dump.main([str(tmp_path), "--check"]) == 1
    assert "revnet38-cifar10.txt" in capsys.readouterr().out
