"""The Python examples of the documentation run as shown: README.md's first block, and MemCNN's
README example, unchanged, as docs/getting-started.md shows it."""

import os
import re
import runpy

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def first_python_block(path, heading):
    with open(os.path.join(ROOT, path)) as f:
        text = f.read()
    section = text[text.index(heading):]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, f"{path}: no python code block after {heading!r}"
    return blocks[0]


def run_block(code, tmp_path):
    example = tmp_path / "example.py"
    example.write_text(code)
    runpy.run_path(str(example), run_name="__main__")


def test_readme_python_example_runs(tmp_path):
    run_block(first_python_block("README.md", "## Python: `import memcnn`"), tmp_path)


def test_memcnn_readme_example_runs_unchanged(tmp_path):
    code = first_python_block(os.path.join("docs", "getting-started.md"), "### MemCNN's README example")
    # MemCNN's own example, as its README has it: a coupling of Conv-BN-ReLU operations, wrapped.
    assert "class ExampleOperation(nn.Module)" in code and "memcnn.InvertibleModuleWrapper(fn=invertible_module" in code
    run_block(code, tmp_path)
