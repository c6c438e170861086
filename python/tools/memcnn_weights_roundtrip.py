#!/usr/bin/env python3
"""RevNet-38 weights from Python to memcnn-train and back, checked on a synthetic CIFAR-10.

    python3 python/tools/memcnn_weights_roundtrip.py PYTHON_SOURCE --memcnn-train PATH [--package DIR]
        [--work DIR] [--iterations 20] [--batch-size 100] [--train-images 500] [--test-images 500]
        [--threads 1]

PYTHON_SOURCE is the folder holding the `memcnn` package that plays the Python side: a checkout of
MemCNN 1.5.2 (`git --git-dir=MIRROR archive 1.5.2 | tar -x -C DIR`; it is not part of this repository)
or this package (build/python/site). --package is this package (the folder containing memcnn/, with
memcnn._C; default: where `import memcnn` finds it), into which the C++ weights are loaded too.

1. Data: a synthetic CIFAR-10 (seed 0) in WORK/data in both layouts, the python version that
   torchvision and MemCNN read and the binary version that memcnn-train reads; the same images.
2. Python -> C++: `python -m memcnn.train revnet38 cifar10 roundtrip --fresh --no-cuda --workers 0`
   runs the Python side's own trainer from a copy of its package in WORK/python-side, whose
   config/config.json names WORK's data and results folders; the added experiment "roundtrip" (in a
   copy of its experiments file) shortens the schedule to --iterations and saves the checkpoint
   state/model/N.pt and state/optimizer/N.pt at the end (for MemCNN, whose data set is torchvision's
   CIFAR10, it also names synthetic_cifar10.OfflineCIFAR10, which reads the set without download, and
   ResNetKeepingFirstBlockInput, MemCNN's ResNet working around its issue #70: keep_first_block_input).
   N.pt is evaluated by the Python side's RevNet-38 in eval mode and by
   `memcnn-train revnet38 cifar10 --evaluate --weights N.pt --inputs memcnn --logits OUT.pt`. Then
   memcnn-train fine-tunes from N.pt and the optimizer's N.pt (--inputs memcnn) for two steps of the whole training set without
   augmentation, whose losses are compared with the same two SGD steps taken in Python.
3. C++ -> Python: memcnn-train trains RevNet-38 for --iterations, --export-weights W.pt writes its
   checkpoint's weights, which go into the Python side's model and this package's model
   (torch.load, load_state_dict(strict=True)); both evaluate them and are compared with
   `memcnn-train --evaluate --weights W.pt --logits` and with memcnn-train's plain --evaluate of its
   own checkpoint.

Both sides compute on the same tensors: in 2., the images as MemCNN's trainer prepares them (bytes
0..255 minus the mean image of the training and test images; memcnn-train's --inputs memcnn), in 3.
as memcnn-train's test loader prepares them (byte / 255 minus the training set's mean image); no
augmentation (MemCNN's own validation also crops and flips the test images at random: see
docs/weights.md).

Logits are compared by their relative difference max |c - p| / max |p| over all test images and
classes (c: C++'s, p: Python's); it must be at most 1e-5, and the accuracies (from the logits, and
as memcnn-train prints it) must be equal. Prints a table of the figures; exit status 1 when a check
fails."""

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = os.path.normpath(os.path.join(TOOLS, "..", ".."))
sys.path.insert(0, TOOLS)
import synthetic_cifar10  # noqa: E402

LOGIT_TOLERANCE = 1e-5
# The fine-tuning losses: memcnn-train's metrics.csv holds 6 significant digits, and two SGD steps in
# float32 differ by summation order. (Without the optimizer's state, the second step's loss differs
# by 1.6%.)
LOSS_TOLERANCE = 1e-4
EXPERIMENT = ["revnet38", "cifar10"]
ROUNDTRIP_TAG = "roundtrip"
EVALUATION_BATCH = 100


# ---- the Python side, run in a subprocess (the package is imported from a given folder) ----

def prepared(images, mean, inputs="unit"):
    """uint8 images [N, C, H, W] as memcnn-train's loader gives them: byte / 255 (float32) minus the mean;
    inputs "memcnn": as MemCNN's trainer does, float32 bytes minus its float64 mean, cast to float32."""
    import torch
    if inputs == "memcnn":
        return (torch.from_numpy(images).float().double() - mean).float()
    return torch.from_numpy(images).float() / 255 - mean


def mean_image(images):
    """memcnn-train's mean image of the training set, in [0, 1]: per-pixel sums in float64 times 1 / (255 n)."""
    import numpy as np
    import torch
    sums = images.reshape(images.shape[0], -1).sum(axis=0, dtype=np.float64)
    return torch.from_numpy((sums * (1.0 / (255.0 * images.shape[0]))).astype(np.float32).reshape(images.shape[1:]))


def memcnn_mean_image(train_images, test_images):
    """MemCNN's mean image: of the training and test images together, in bytes, float64."""
    import numpy as np
    import torch
    return torch.from_numpy(np.concatenate((train_images, test_images)).mean(axis=0, dtype=np.float64))


def is_memcnn_itself(package_dir):
    """Whether the memcnn package in package_dir is MemCNN's (this one has the extension memcnn._C)."""
    return not any(name.startswith("_C.") for name in os.listdir(os.path.join(package_dir, "memcnn")))


def keep_first_block_input(model):
    """Works around MemCNN's issue #70 (open in 1.5.2): its first reversible block frees its input,
    the stem's ReLU output, which ReLU saved for its backward, and in backward restores it in place,
    so that PyTorch >= 1.10 refuses the backward ("modified by an inplace operation"). Keeping that
    one input (keep_input, no parameter or buffer) is what this package does by itself."""
    first = next(module for module in model.modules() if hasattr(module, "revblock"))
    first.revblock.keep_input = True
    return model


def _memcnn_resnet_keeping_first_block_input():
    from memcnn.models.resnet import ResNet

    class ResNetKeepingFirstBlockInput(ResNet):
        """MemCNN's ResNet with keep_first_block_input applied: the same modules and state_dict."""

        def __init__(self, *args, **kwargs):
            super(ResNetKeepingFirstBlockInput, self).__init__(*args, **kwargs)
            keep_first_block_input(self)

    return ResNetKeepingFirstBlockInput


def __getattr__(name):
    # "memcnn_weights_roundtrip.ResNetKeepingFirstBlockInput" in MemCNN's experiments file: built on
    # whichever memcnn the trainer imported.
    if name == "ResNetKeepingFirstBlockInput":
        return _memcnn_resnet_keeping_first_block_input()
    raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name))


def python_revnet38(package_dir):
    """The package's RevNet-38 for CIFAR-10 as its experiments file describes it (MemCNN's recipe)."""
    import memcnn
    found = os.path.dirname(os.path.dirname(os.path.abspath(memcnn.__file__)))
    if os.path.realpath(found) != os.path.realpath(package_dir):
        raise SystemExit("imported memcnn from {}, not from {}".format(found, package_dir))
    from memcnn.experiment.factory import get_attr_from_module, load_experiment_config
    config = load_experiment_config(os.path.join(package_dir, "memcnn", "config", "experiments.json"), EXPERIMENT)
    params = dict(config["model_params"])
    params["block"] = get_attr_from_module(params["block"])
    model = get_attr_from_module(config["model"])(**params)
    return keep_first_block_input(model) if is_memcnn_itself(package_dir) else model, config


def evaluate_in_python(package_dir, weights, data, out, optimizer_state=None, finetune_steps=0, threads=None,
                       inputs="unit"):
    """Loads `weights` into the package's RevNet-38 (torch.load, load_state_dict strict) and writes to
    `out` a dict: logits of the test set in eval mode, labels, accuracy; with finetune_steps, also the
    losses of that many SGD steps (the experiment's optimizer settings, its state from optimizer_state)
    on the whole training set, without augmentation, from the same weights."""
    sys.path.insert(0, package_dir)
    import torch
    import torch.nn.functional as F
    if threads:
        torch.set_num_threads(threads)
    model, config = python_revnet38(package_dir)
    model.load_state_dict(torch.load(weights, map_location="cpu"), strict=True)
    train_images, train_labels = synthetic_cifar10.read_binary(data, train=True)
    test_images, test_labels = synthetic_cifar10.read_binary(data, train=False)
    mean = memcnn_mean_image(train_images, test_images) if inputs == "memcnn" else mean_image(train_images)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(prepared(test_images[i:i + EVALUATION_BATCH], mean, inputs))
                            for i in range(0, len(test_images), EVALUATION_BATCH)])
    labels = torch.from_numpy(test_labels)
    result = {"logits": logits, "labels": labels,
              "accuracy": logits.argmax(1).eq(labels).double().mean().item(), "losses": []}
    if finetune_steps:
        optimizer = torch.optim.SGD(model.parameters(), **config["optimizer_params"])
        if optimizer_state:
            optimizer.load_state_dict(torch.load(optimizer_state, map_location="cpu"))
        model.train()
        images, targets = prepared(train_images, mean, inputs), torch.from_numpy(train_labels)
        for _ in range(finetune_steps):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), targets)
            loss.backward()
            optimizer.step()
            result["losses"].append(loss.item())
    torch.save(result, out)


# ---- the driver ----

class Run(object):
    """Runs the programs of the round trip, each one's output kept in WORK/logs."""

    def __init__(self, work, memcnn_train, threads):
        self.work, self.memcnn_train, self.threads = work, memcnn_train, threads
        self.logs = os.path.join(work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.count = 0

    def __call__(self, name, command, cwd=None, env=None):
        self.count += 1
        log = os.path.join(self.logs, "{:02d}-{}.log".format(self.count, name))
        result = subprocess.run(command, cwd=cwd or self.work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        with open(log, "w") as f:
            f.write("$ {}\n{}".format(" ".join(command), result.stdout))
        if result.returncode != 0:
            raise RuntimeError("{} failed (exit status {}); its output ({}):\n{}".format(
                name, result.returncode, log, result.stdout[-4000:]))
        return result.stdout

    def cpp(self, name, *arguments):
        command = [self.memcnn_train, *EXPERIMENT, *arguments]
        if self.threads:
            command += ["--threads", str(self.threads)]
        return self(name, command)

    def python_environment(self, path):
        environment = dict(os.environ, PYTHONPATH=path, PYTHONDONTWRITEBYTECODE="1")
        if self.threads:
            environment["OMP_NUM_THREADS"] = str(self.threads)
        return environment

    def evaluate_in_python(self, name, package_dir, weights, data, optimizer_state=None, finetune_steps=0,
                           inputs="unit"):
        import torch
        out = os.path.join(self.work, name + ".pt")
        command = [sys.executable, os.path.abspath(__file__), "_evaluate", package_dir, weights, data, out,
                   "--finetune-steps", str(finetune_steps), "--inputs", inputs]
        if optimizer_state:
            command += ["--optimizer-state", optimizer_state]
        if self.threads:
            command += ["--threads", str(self.threads)]
        # The package alone on the path: MemCNN's and this one are both called memcnn.
        self(name, command, env=self.python_environment(package_dir))
        return torch.load(out)


def copy_python_side(source, work, data, results, iterations, batch_size):
    """A copy of source's memcnn package in WORK/python-side with config.json naming data and results,
    and its experiments file with the short "roundtrip" experiment added; returns (folder, experiments)."""
    if not os.path.isfile(os.path.join(source, "memcnn", "train.py")):
        raise SystemExit("{} holds no memcnn package with a trainer (memcnn/train.py)".format(source))
    side = os.path.join(work, "python-side")
    if os.path.exists(side):
        shutil.rmtree(side)
    shutil.copytree(os.path.join(source, "memcnn"), os.path.join(side, "memcnn"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
    with open(os.path.join(side, "memcnn", "config", "config.json"), "w") as f:
        json.dump({"data_dir": data, "results_dir": results}, f)
    with open(os.path.join(side, "memcnn", "config", "experiments.json")) as f:
        experiments = json.load(f)
    short = {"data_loader_params": {"max_epoch": iterations, "batch_size": batch_size},
             "trainer_params": {"save_iter": iterations, "valid_iter": 10 ** 9, "disp_iter": 1}}
    if experiments["cifar10"]["data_loader_params"]["dataset"].startswith("torchvision."):
        short["data_loader_params"]["dataset"] = "synthetic_cifar10.OfflineCIFAR10"
    if is_memcnn_itself(side):
        short["model"] = "memcnn_weights_roundtrip.ResNetKeepingFirstBlockInput"
    experiments[ROUNDTRIP_TAG] = short
    experiments_file = os.path.join(work, "python-experiments.json")
    with open(experiments_file, "w") as f:
        json.dump(experiments, f, indent=1)
    return side, experiments_file


def cpp_finetune_experiments(work):
    """memcnn-train's experiments with RevNet-38 on CIFAR-10 unaugmented and logged every step."""
    with open(os.path.join(REPOSITORY, "train", "experiments.json")) as f:
        experiments = json.load(f)
    experiments["_".join(EXPERIMENT)] = {"base": EXPERIMENT[::-1], "augment": False, "log_every": 1,
                                         "checkpoint_every": 1000}
    path = os.path.join(work, "cpp-finetune-experiments.json")
    with open(path, "w") as f:
        json.dump(experiments, f, indent=1)
    return path


def printed_accuracy(output):
    """The test accuracy memcnn-train printed, as a fraction."""
    found = re.findall(r"test accuracy ([0-9.]+)%", output)
    if not found:
        raise RuntimeError("memcnn-train printed no test accuracy:\n" + output[-2000:])
    return float(found[-1]) / 100


def metrics_losses(results):
    """The loss of each logged iteration in memcnn-train's metrics.csv."""
    with open(os.path.join(results, "_".join(EXPERIMENT), "metrics.csv")) as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def relative_difference(cpp, python):
    return (cpp - python).abs().max().item() / max(python.abs().max().item(), 1e-30)


class Checks(object):
    """The rows of the table: a figure, its limit and whether it passed."""

    def __init__(self):
        self.rows = []

    def add(self, name, value, passed, limit=""):
        self.rows.append((name, value, limit, bool(passed)))

    def logits(self, name, cpp, python):
        import torch
        if not torch.equal(cpp["labels"], python["labels"]):
            self.add(name + ": labels in test-set order", "differ", False)
        difference = relative_difference(cpp["logits"], python["logits"])
        self.add(name + ": max relative logit difference", "{:.2e}".format(difference),
                 difference <= LOGIT_TOLERANCE, "<= {:.0e}".format(LOGIT_TOLERANCE))
        return difference

    def accuracies(self, name, figures):
        """figures: [(who, accuracy)]; all must be equal."""
        values = [a for _, a in figures]
        text = ", ".join("{} {:.2f}%".format(who, 100 * a) for who, a in figures)
        self.add(name + ": accuracies", text, max(values) - min(values) < 1e-9, "equal")

    def passed(self):
        return all(row[3] for row in self.rows)

    def table(self):
        rows = [("check", "figure", "limit", "result")] + [(n, v, l, "ok" if ok else "FAILED")
                                                            for n, v, l, ok in self.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        return "\n".join("{:<{}}  {:<{}}  {:<{}}  {}".format(row[0], widths[0], row[1], widths[1], row[2], widths[2],
                                                           row[3]) for row in rows)


def accuracy_from(logits_file):
    return logits_file["logits"].argmax(1).eq(logits_file["labels"]).double().mean().item()


def cpp_logits(path):
    """A logits file of memcnn-train, opened as a state_dict would be (weights_only: tensors and dicts only)."""
    import torch
    return torch.load(path, weights_only=True)


def python_to_cpp(run, checks, args, data):
    """MemCNN's trainer (or this package's) -> memcnn-train: evaluation and fine-tuning."""
    results = os.path.join(args.work, "python-results")
    os.makedirs(results, exist_ok=True)
    side, experiments_file = copy_python_side(args.python_source, args.work, data, results, args.iterations,
                                              args.batch_size)
    run("python-train", [sys.executable, "-m", "memcnn.train", *EXPERIMENT, ROUNDTRIP_TAG, "--fresh", "--no-cuda",
                         "--workers", "0", "--experiments-file", experiments_file],
        cwd=side, env=run.python_environment(os.pathsep.join([side, TOOLS])))
    state = os.path.join(results, "_".join(EXPERIMENT + [ROUNDTRIP_TAG]), "state")
    weights = os.path.join(state, "model", "{}.pt".format(args.iterations))
    optimizer = os.path.join(state, "optimizer", "{}.pt".format(args.iterations))
    # The images as MemCNN's trainer prepares them, on both sides (memcnn-train --inputs memcnn).
    python = run.evaluate_in_python("python-side-evaluates-python-weights", side, weights, data,
                                    optimizer_state=optimizer, finetune_steps=2, inputs="memcnn")
    cpp_out = os.path.join(args.work, "cpp-logits-of-python-weights.pt")
    printed = printed_accuracy(run.cpp("cpp-evaluates-python-weights", "--evaluate", "--weights", weights,
                                       "--inputs", "memcnn", "--logits", cpp_out, "--data-dir", data,
                                       "--results-dir", os.path.join(args.work, "cpp-evaluate")))
    cpp = cpp_logits(cpp_out)
    name = "Python -> C++ ({} it)".format(args.iterations)
    checks.logits(name, cpp, python)
    checks.accuracies(name, [("Python", python["accuracy"]), ("C++ logits", accuracy_from(cpp)),
                             ("C++ printed", printed)])

    finetune = os.path.join(args.work, "cpp-finetune")
    run.cpp("cpp-finetunes-python-weights", "--weights", weights, "--optimizer-state", optimizer, "--fresh",
            "--inputs", "memcnn",
            "--max-iterations", "2", "--batch-size", str(args.train_images), "--experiments-file",
            cpp_finetune_experiments(args.work), "--data-dir", data, "--results-dir", finetune)
    losses = metrics_losses(finetune)
    for step, (c, p) in enumerate(zip(losses, python["losses"]), 1):
        difference = abs(c - p) / abs(p)
        checks.add("fine-tuning in C++: loss of step {} (C++ vs Python)".format(step),
                   "{:.6f} vs {:.6f} ({:.1e})".format(c, p, difference), difference <= LOSS_TOLERANCE,
                   "<= {:.0e}".format(LOSS_TOLERANCE))
    if len(losses) != 2:
        checks.add("fine-tuning in C++: steps logged", str(len(losses)), False, "2")


def cpp_to_python(run, checks, args, data):
    """memcnn-train -> MemCNN's model (or this package's) and this package's model."""
    import torch
    results = os.path.join(args.work, "cpp-results")
    run.cpp("cpp-train", "--fresh", "--max-iterations", str(args.iterations), "--batch-size", str(args.batch_size),
            "--data-dir", data, "--results-dir", results)
    weights = os.path.join(args.work, "cpp-weights.pt")
    run.cpp("cpp-export", "--export-weights", weights, "--data-dir", data, "--results-dir", results)
    state = torch.load(weights, weights_only=True)
    checks.add("C++ -> Python: exported state_dict opens with weights_only=True",
               "{} tensors".format(len(state)), len(state) > 0)

    cpp_out = os.path.join(args.work, "cpp-logits-of-cpp-weights.pt")
    printed = printed_accuracy(run.cpp("cpp-evaluates-exported-weights", "--evaluate", "--weights", weights,
                                       "--logits", cpp_out, "--data-dir", data,
                                       "--results-dir", os.path.join(args.work, "cpp-evaluate")))
    own_out = os.path.join(args.work, "cpp-logits-of-own-checkpoint.pt")
    printed_own = printed_accuracy(run.cpp("cpp-evaluates-own-checkpoint", "--evaluate", "--logits", own_out,
                                           "--data-dir", data, "--results-dir", results))
    cpp, own = cpp_logits(cpp_out), cpp_logits(own_out)
    name = "C++ -> Python ({} it)".format(args.iterations)
    python_side = os.path.join(args.work, "python-side")
    side = run.evaluate_in_python("python-side-evaluates-cpp-weights", python_side, weights, data)
    ours = run.evaluate_in_python("this-package-evaluates-cpp-weights", args.package, weights, data)
    checks.logits(name + ", Python side", cpp, side)
    checks.logits(name + ", this package", cpp, ours)
    checks.logits(name + ", C++ own checkpoint vs Python side", own, side)
    checks.accuracies(name, [("Python side", side["accuracy"]), ("this package", ours["accuracy"]),
                             ("C++ logits", accuracy_from(cpp)), ("C++ printed", printed),
                             ("C++ own checkpoint", printed_own)])


def this_package():
    """Where `import memcnn` finds this package (run elsewhere, so that python/memcnn, the sources without
    the extension, is not what it finds)."""
    path = os.pathsep.join(os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)
    probe = subprocess.run([sys.executable, "-c", "import memcnn, os; print(os.path.dirname(memcnn.__path__[0]))"],
                           capture_output=True, text=True, cwd=tempfile.gettempdir(),
                           env=dict(os.environ, PYTHONPATH=path))
    if probe.returncode != 0:
        raise SystemExit("cannot import memcnn (give --package or set PYTHONPATH): " + probe.stderr)
    return probe.stdout.strip()


def roundtrip(args):
    """Runs both directions; returns the Checks."""
    if args.train_images % 5:
        raise SystemExit("--train-images must be a multiple of 5 (five training batches)")
    args.python_source = os.path.abspath(args.python_source)
    args.package = os.path.abspath(args.package or this_package())
    data = os.path.join(args.work, "data")
    written = synthetic_cifar10.write(data, per_batch=args.train_images // 5, test=args.test_images, seed=0,
                                      layouts=("python", "binary"))
    import numpy as np
    for train, (images, labels) in [(True, written[:2]), (False, written[2:])]:
        binary_images, binary_labels = synthetic_cifar10.read_binary(data, train)
        if not (np.array_equal(binary_images.transpose(0, 2, 3, 1), images) and np.array_equal(binary_labels, labels)):
            raise SystemExit("the two layouts of the synthetic CIFAR-10 differ")
    run = Run(args.work, os.path.abspath(args.memcnn_train), args.threads)
    checks = Checks()
    python_to_cpp(run, checks, args, data)
    cpp_to_python(run, checks, args, data)
    return checks


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("python_source", help="folder holding the memcnn package of the Python side")
    parser.add_argument("--memcnn-train", required=True, help="the memcnn-train program")
    parser.add_argument("--package", default=None, help="folder holding this package's memcnn/ (with memcnn._C)")
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--iterations", type=int, default=20, help="training iterations on each side")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--train-images", type=int, default=500, help="a multiple of 5 (five batch files)")
    parser.add_argument("--test-images", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of each program (default 1: OpenMP threads spinning on busy cores slowed "
                             "runs down up to tenfold)")
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_evaluate":
        parser = argparse.ArgumentParser()
        for name in ("package_dir", "weights", "data", "out"):
            parser.add_argument(name)
        parser.add_argument("--optimizer-state", default=None)
        parser.add_argument("--finetune-steps", type=int, default=0)
        parser.add_argument("--threads", type=int, default=None)
        parser.add_argument("--inputs", default="unit")
        a = parser.parse_args(argv[1:])
        evaluate_in_python(a.package_dir, a.weights, a.data, a.out, a.optimizer_state, a.finetune_steps, a.threads,
                           a.inputs)
        return 0
    args = parse(argv)
    temporary = args.work is None
    args.work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="memcnn-weights-"))
    os.makedirs(args.work, exist_ok=True)
    try:
        checks = roundtrip(args)
        print("RevNet-38 weights, {} and memcnn-train, on a synthetic CIFAR-10 ({} training, {} test images):".format(
            args.python_source, args.train_images, args.test_images))
        print(checks.table())
        print("relative logit difference: max |C++ - Python| / max |Python| over all test logits")
        return 0 if checks.passed() else 1
    finally:
        if temporary:
            shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
