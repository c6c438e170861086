#!/usr/bin/env python3
"""Runs MemCNN 1.5.2's own test suite, its files unchanged, against this package.

    python3 python/tools/run_memcnn_suite.py MEMCNN_SOURCE [--package DIR] [--work DIR] [--reference]
                                             [--synthetic-cifar10] [-- PYTEST_ARGS...]

(PYTEST_ARGS naming files below memcnn/ run only those.)

MEMCNN_SOURCE is a checkout of MemCNN 1.5.2 (the folder holding memcnn/; for instance
`git --git-dir=MIRROR archive 1.5.2 | tar -x -C /tmp/memcnn-1.5.2`). The suite is not part of this
repository. MemCNN's tests live inside its package (memcnn/models/tests, memcnn/trainers/tests, ...)
and import helpers through it (memcnn.models.tests.test_models, memcnn.trainers.tests.test_train), so
they are run from a work folder (default: a temporary one) holding a copy of this package (DIR:
the folder containing memcnn/, default where `import memcnn` finds it) into which MemCNN's `tests`
folders and its examples/ are copied; no module of MemCNN's own package is copied. pytest then
imports memcnn from there: every module it runs is ours.

Prints pytest's summary, then every test that did not pass, each with its reason: expected
exceptions (a download of CIFAR-10, which this machine cannot make; the documented deviations
of this package; a test of MemCNN's that is flaky and passed when rerun, see flaky()), and anything
else as UNEXPECTED. Exit status 0 when nothing unexpected failed.

--synthetic-cifar10 (a diagnostic, not the suite's result): torchvision's CIFAR10, which six tests
download, is replaced for the run by memcnn.data.cifar.CIFAR10 reading a small synthetic CIFAR-10
(python version's layout) made in the work folder, so those tests run against this package's
trainer, loaders and models instead of failing at the download.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)
import synthetic_cifar10  # noqa: E402

# Test ids (pytest node ids below memcnn/) that fail against this package by design, with the reason.
DEVIATIONS = {
    "models/tests/test_revop.py::test_chained_invertible_module_wrapper_shared_fwd_and_bwd_train_passes":
        "deviation: backward sets no .grad on the wrapper's non-leaf output (the test asserts Y.grad is not None; "
        "PyTorch itself warns that reading it is a mistake)",
    "models/tests/test_revop.py::test_invertible_module_wrapper_disabled_versus_enabled[False]":
        "deviation: in eval() under torch.no_grad() the input is kept, not freed (no backward would rebuild it)",
    "models/tests/test_revop.py::test_invertible_module_wrapper_disabled_versus_enabled[True]":
        "deviation: in eval() under torch.no_grad() the input is kept, not freed (no backward would rebuild it)",
}
DOWNLOAD_MARKERS = ("URLError", "urlopen error", "Name or service not known", "Temporary failure in name resolution",
                    "Network is unreachable")


def flaky(nodeid, message):
    """Whether a failure may be the suite's own flakiness, to be rerun: test_invertible_module_wrapper_fwd_bwd
    trains one affine coupling (fn1: exp(h) scaling), built once at collection, through 16 tests x 10 steps and
    then demands inverse(forward(x)) within 1e-4; Debian's torch seeds each process at random, so with some
    initial weights the error ends just above 1e-4 and every later fn1 test fails. It happens against MemCNN
    itself as well (3 of 20 runs of those tests; 1 of 20 against this package). The same failure is what a
    broken affine inverse gives, so such a failure is excused only when the test passes on a rerun (in a
    fresh process, with a fresh coupling: see rerun())."""
    return (nodeid.startswith("models/tests/test_revop.py::test_invertible_module_wrapper_fwd_bwd[") and
            nodeid.endswith("-fn1]") and "allclose" in message)


def classify(nodeid, message, passed_on_rerun=False):
    """The reason a failure is expected, or None when it is not."""
    if flaky(nodeid, message) and passed_on_rerun:
        return ("flaky in MemCNN's suite itself, passed when rerun: inverse error of a shared, repeatedly trained "
                "affine coupling just above 1e-4 for some random initialisations (see flaky())")
    if any(marker in message for marker in DOWNLOAD_MARKERS):
        return "needs a download: torchvision.datasets.CIFAR10(download=True) in the test itself; no network here"
    return DEVIATIONS.get(nodeid)


def read_report(report):
    """pytest's JUnit XML report as {node id below memcnn/: (outcome, message)}, outcome one of
    passed, skipped, failed."""
    results = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        path = case.get("classname", "").replace(".", "/")
        nodeid = "{}.py::{}".format(path, case.get("name"))
        nodeid = nodeid[len("memcnn/"):] if nodeid.startswith("memcnn/") else nodeid
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if case.find("skipped") is not None:
            results[nodeid] = ("skipped", "")
        elif failure is not None:
            results[nodeid] = ("failed", (failure.get("message") or "") + (failure.text or ""))
        else:
            results[nodeid] = ("passed", "")
    return results


def rerun(nodeids, pytest_prefix, work, environment):
    """Runs the given tests again, alone, in a new pytest process (so a shared module built at collection
    is built anew); returns read_report's results for them, or {} when pytest wrote no report."""
    report = os.path.join(work, "junit-rerun.xml")
    if os.path.exists(report):
        os.remove(report)
    subprocess.run(pytest_prefix + ["--junitxml", report] + ["memcnn/" + nodeid for nodeid in nodeids],
                   cwd=work, env=environment)
    return read_report(report) if os.path.exists(report) else {}


def build_overlay(memcnn_source, package_dir, work):
    source = os.path.join(memcnn_source, "memcnn")
    ours = os.path.join(package_dir, "memcnn")
    if not os.path.isfile(os.path.join(source, "models", "tests", "test_revop.py")):
        raise SystemExit("{} does not look like MemCNN's source (no memcnn/models/tests/test_revop.py)".format(
            memcnn_source))
    if not os.path.isfile(os.path.join(ours, "__init__.py")):
        raise SystemExit("{} holds no memcnn package".format(package_dir))
    target = os.path.join(work, "memcnn")
    if os.path.exists(target):
        shutil.rmtree(target)
    shutil.copytree(ours, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    copied = []
    for folder, subfolders, _ in os.walk(source):
        for name in list(subfolders):
            if name == "tests" or (name == "examples" and folder == source):
                relative = os.path.relpath(os.path.join(folder, name), source)
                destination = os.path.join(target, relative)
                if os.path.exists(destination):
                    raise SystemExit("this package already has {}; refusing to mix it with MemCNN's".format(relative))
                if not os.path.isdir(os.path.dirname(destination)):
                    raise SystemExit("MemCNN's {} belongs to memcnn.{}, which this package lacks".format(
                        relative, os.path.dirname(relative).replace(os.sep, ".")))
                shutil.copytree(os.path.join(folder, name), destination,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                copied.append(relative)
                subfolders.remove(name)
    return sorted(copied)


SYNTHETIC_PLUGIN = """
# Loaded by pytest (-p) before collection (run_memcnn_suite.py --synthetic-cifar10): torchvision's CIFAR10
# reads the synthetic data set from {root!r} whatever root it is given, without checksums or download.
import sys

sys.path.insert(0, {tools!r})
import synthetic_cifar10  # noqa: E402

synthetic_cifar10.patch_torchvision({root!r})
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("memcnn_source")
    parser.add_argument("--package", default=None, help="folder containing this package's memcnn/ (with memcnn._C)")
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--reference", action="store_true",
                        help="run MemCNN's own package from MEMCNN_SOURCE instead (the comparison)")
    parser.add_argument("--synthetic-cifar10", action="store_true",
                        help="diagnostic: torchvision's CIFAR10 reads a synthetic CIFAR-10 instead of downloading")
    args, pytest_args = parser.parse_known_args(argv)
    args.pytest_args = [a for a in pytest_args if a != "--"]

    package_dir = args.package
    if package_dir is None and not args.reference:
        probe = subprocess.run([sys.executable, "-c", "import memcnn, os; print(os.path.dirname(memcnn.__path__[0]))"],
                               capture_output=True, text=True, cwd=tempfile.gettempdir())
        if probe.returncode != 0:
            raise SystemExit("cannot import memcnn (give --package or set PYTHONPATH): " + probe.stderr)
        package_dir = probe.stdout.strip()
    work = args.work or tempfile.mkdtemp(prefix="memcnn-suite-")
    os.makedirs(work, exist_ok=True)
    try:
        if args.reference:
            target = os.path.join(work, "memcnn")
            if os.path.exists(target):
                shutil.rmtree(target)
            shutil.copytree(os.path.join(args.memcnn_source, "memcnn"), target,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            print("reference run: MemCNN's own package and tests from {}".format(args.memcnn_source))
        else:
            copied = build_overlay(os.path.abspath(args.memcnn_source), os.path.abspath(package_dir), work)
            print("package: {}/memcnn; MemCNN's tests from {}: {}".format(package_dir, args.memcnn_source,
                                                                         ", ".join(copied)))
        report = os.path.join(work, "junit.xml")
        environment = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        environment.pop("PYTHONPATH", None)  # memcnn comes from the work folder only
        selected = [a for a in args.pytest_args if a.startswith("memcnn/")]  # a part of the suite, else all of it
        pytest_prefix = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"]
        if args.synthetic_cifar10:
            data = os.path.join(work, "synthetic-cifar10")
            synthetic_cifar10.write(data, per_batch=40, test=20, seed=0)
            with open(os.path.join(work, "synthetic_cifar10_plugin.py"), "w") as f:
                f.write(SYNTHETIC_PLUGIN.format(root=data, tools=TOOLS))
            pytest_prefix += ["-p", "synthetic_cifar10_plugin"]
            environment["PYTHONPATH"] = work
            print("diagnostic run: torchvision's CIFAR10 reads a synthetic CIFAR-10 from {}".format(data))
        command = pytest_prefix + ["--junitxml", report] + ([] if selected else ["memcnn"]) + args.pytest_args
        result = subprocess.run(command, cwd=work, env=environment)
        if not os.path.exists(report):
            print("pytest wrote no report (exit status {})".format(result.returncode))
            return 1
        results = read_report(report)
        rerun_results = {}
        to_rerun = [nodeid for nodeid, (outcome, message) in results.items()
                    if outcome == "failed" and flaky(nodeid, message)]
        if to_rerun and not args.reference:
            print("\nrerunning {} test(s) whose failure may be MemCNN's flaky one (see flaky()), alone:".format(
                len(to_rerun)))
            rerun_results = rerun(to_rerun, pytest_prefix, work, environment)
        counts = {"passed": 0, "skipped": 0, "failed": 0}
        exceptions, unexpected = [], []
        for nodeid, (outcome, message) in results.items():
            counts[outcome] += 1
            if outcome != "failed":
                continue
            first_line = (message.strip().splitlines() or [""])[0][:200]
            if args.reference:
                exceptions.append((nodeid, first_line))
                continue
            rerun_outcome = rerun_results.get(nodeid, ("not rerun", ""))[0]
            reason = classify(nodeid, message, passed_on_rerun=rerun_outcome == "passed")
            if not reason and nodeid in to_rerun:
                first_line = "failed again when rerun alone ({}): {}".format(rerun_outcome, first_line)
            (exceptions if reason else unexpected).append((nodeid, reason or first_line))
        total = sum(counts.values())
        print("\nMemCNN 1.5.2's suite against {}: {} tests, {passed} passed, {skipped} skipped, "
              "{failed} failed".format("MemCNN itself" if args.reference else "this package", total, **counts))
        for nodeid, reason in exceptions:
            print("  {}  {}: {}".format("failed" if args.reference else "expected", nodeid, reason))
        for nodeid, reason in unexpected:
            print("  UNEXPECTED {}: {}".format(nodeid, reason))
        return 1 if unexpected else 0
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
