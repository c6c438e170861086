"""Sphinx configuration of memcnn's documentation site (built by scripts/docs.sh).

scripts/docs.sh runs Doxygen first and passes its XML folder in MEMCNN_DOXYGEN_XML; the
command-line pages run the programs from the build folder, which docs.sh puts first on PATH;
the Python API pages import the built package (PYTHONPATH set by docs.sh).
"""
import os
import re

project = "memcnn"
author = "memcnn developers"
copyright = "2026, memcnn developers"


def _project_version():
    cmake = os.path.join(os.path.dirname(__file__), "..", "CMakeLists.txt")
    with open(cmake, encoding="utf-8") as file:
        match = re.search(r"project\(memcnn[^)]*VERSION\s+([0-9.]+)", file.read())
    return match.group(1) if match else "unknown"


version = release = _project_version()

extensions = [
    "myst_parser",
    "breathe",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinxcontrib.programoutput",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "tools", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 4

breathe_projects = {"memcnn": os.environ.get("MEMCNN_DOXYGEN_XML", "")}
breathe_default_project = "memcnn"
breathe_default_members = ("members",)
breathe_show_include = True
# C++ signatures the Sphinx C++ domain cannot resolve (LibTorch's types) are not warnings: the
# reference links what it knows and prints the rest as text.
nitpicky = False

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = True

programoutput_use_ansi = False

html_theme = "furo"
html_title = f"memcnn {release}"
html_static_path = []
html_show_sourcelink = False
