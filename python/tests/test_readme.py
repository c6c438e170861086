"""MemCNN's README example, as README.md's Python section shows it, runs unchanged."""

import os
import re
import runpy


def test_readme_python_example_runs(tmp_path):
    readme = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")
    with open(readme) as f:
        text = f.read()
    section = text[text.index("## Python: `import memcnn`"):]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README.md's Python section has no python code block"
    example = tmp_path / "readme_example.py"
    example.write_text(blocks[0])
    runpy.run_path(str(example), run_name="__main__")
