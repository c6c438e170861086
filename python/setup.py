"""Builds the extension memcnn._C for `pip install ./python` / `pip wheel ./python` (pyproject.toml
holds the package's metadata).

The extension is compiled by CMake from the repository's root CMakeLists.txt, with only what it
needs (the core and models/; no tests, programs, benchmarks or install rules), against the torch
that the interpreter running this build imports: torch.utils.cmake_prefix_path gives CMake that
torch's LibTorch, so a machine with PyTorch 2.x and CUDA builds against those, Debian's python3
against its LibTorch 1.13. Environment: CMAKE_ARGS (extra CMake arguments, split like a shell
would), MEMCNN_JOBS (parallel compile jobs; default: the number of CPUs), MEMCNN_BUILD_TYPE
(default Release), MEMCNN_CMAKE_BUILD_DIR (CMake's build folder; default: under setuptools' build/,
kept between builds). ccache is used when installed (the root CMakeLists.txt's MEMCNN_USE_CCACHE)."""

import os
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        root_cmake = os.path.join(ROOT, "CMakeLists.txt")
        if not os.path.isfile(root_cmake) or not os.path.isfile(os.path.join(ROOT, "include", "memcnn", "memcnn.h")):
            raise RuntimeError("memcnn: the C++ sources are not next to this package ({} missing): build from a checkout "
                               "of the repository, `pip install ./python` from its root (pip >= 21.3 builds in "
                               "place); an sdist is not supported".format(root_cmake))
        cmake = shutil.which("cmake")
        if cmake is None:
            raise RuntimeError("memcnn: building memcnn._C needs CMake >= 3.18 (Debian: apt-get install cmake)")
        try:
            import torch
            import torch.utils
        except ImportError as error:
            raise RuntimeError("memcnn: the interpreter building the package ({}) cannot import torch ({}); install "
                               "PyTorch first (Debian: python3-torch, and a venv with --system-site-packages), and "
                               "build with --no-build-isolation so the build sees it".format(sys.executable, error))
        build_dir = os.path.abspath(os.environ.get("MEMCNN_CMAKE_BUILD_DIR") or os.path.join(self.build_temp, "cmake"))
        os.makedirs(build_dir, exist_ok=True)
        configure = [
            cmake, "-S", ROOT, "-B", build_dir,
            "-DCMAKE_BUILD_TYPE=" + os.environ.get("MEMCNN_BUILD_TYPE", "Release"),
            "-DCMAKE_PREFIX_PATH=" + torch.utils.cmake_prefix_path,
            "-DPython3_EXECUTABLE=" + sys.executable,
            "-DMEMCNN_BUILD_PYTHON=ON", "-DMEMCNN_BUILD_TESTS=OFF", "-DMEMCNN_BUILD_APPS=OFF",
            "-DMEMCNN_BUILD_BENCH=OFF", "-DMEMCNN_INSTALL=OFF", "-DMEMCNN_LAYERS=models",
        ] + shlex.split(os.environ.get("CMAKE_ARGS", ""))
        jobs = os.environ.get("MEMCNN_JOBS") or str(os.cpu_count() or 1)
        print("memcnn: building memcnn._C against torch {} ({}) for {}".format(
            torch.__version__, torch.utils.cmake_prefix_path, sys.executable), flush=True)
        subprocess.run(configure, check=True)
        subprocess.run([cmake, "--build", build_dir, "--target", "memcnn_python_ext", "-j", jobs], check=True)

        staged = os.path.join(build_dir, "python", "site", "memcnn")
        built = [f for f in os.listdir(staged) if f.startswith("_C.") and f.endswith((".so", ".pyd"))]
        if len(built) != 1:
            raise RuntimeError("memcnn: expected one memcnn._C in {}, found {}".format(staged, built))
        destination = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        shutil.copyfile(os.path.join(staged, built[0]), destination)


setup(ext_modules=[CMakeExtension("memcnn._C")], cmdclass={"build_ext": CMakeBuild})
