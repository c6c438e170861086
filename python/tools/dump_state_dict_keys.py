#!/usr/bin/env python3
"""Writes the state_dict names and shapes of the Python twins of memcnn-train's models, the
fixtures of memcnn::models::python_key_map's tests (models/tests/data/python_keys) and of
python/tests/test_python_keys.py.

    PYTHONPATH=MEMCNN_1_5_2_SOURCE python3 python/tools/dump_state_dict_keys.py OUT_DIR
    PYTHONPATH=build/python/site   python3 python/tools/dump_state_dict_keys.py OUT_DIR
    PYTHONPATH=build/python/site   python3 python/tools/dump_state_dict_keys.py --check OUT_DIR

One file per model and dataset, MODEL-DATASET.txt: a comment line saying where it came from, then
`name [shape]` per tensor in state_dict order (`conv1.weight [16,3,3,3]`; a scalar is `[]`).

Where each file comes from (SOURCES below):
  - the ResNets and RevNets on CIFAR-10 and CIFAR-100: MemCNN 1.5.2 itself, its
    memcnn.models.resnet.ResNet built from its memcnn/config/experiments.json (model + dataset),
    as MemCNN's experiment factory builds it (MEMCNN_1_5_2_SOURCE: the folder holding MemCNN
    1.5.2's memcnn/, e.g. `git --git-dir=MIRROR archive 1.5.2 | tar -x -C /tmp/memcnn-1.5.2`);
  - resnet32 and revnet38 on Fashion-MNIST (1 input channel, which MemCNN 1.5.2 cannot build):
    this repository's package, from its experiments.json the same way;
  - the transformers: this package's memcnn.models.vit.create(name, classes, channels, image size);
  - iunet3d: this package's memcnn.iunet.IUNet with memcnn-train's iunet3d recipe
    (train/experiments.json), between the stem and head convolutions memcnn-train puts around it
    (a torch.nn.Module with stem = Sequential(Conv3d), iunet, head = Sequential(Conv3d)).

The package on the path decides which files are written: MemCNN 1.5.2 writes its files, this
package the others. --check compares every file that the package on the path can build (this
package builds all, the ResNets from its own memcnn.models.resnet) with what it builds now and
exits 1 on a difference.
"""

import argparse
import os
import sys

import torch.nn as nn

import memcnn

RESNETS = ["resnet32", "resnet110", "resnet164", "revnet38", "revnet110", "revnet164"]
TRANSFORMERS = ["vit_tiny", "revvit_tiny", "vit_small", "revvit_small"]
DATASETS = {"cifar10": dict(classes=10, channels=3, image_size=32),
            "cifar100": dict(classes=100, channels=3, image_size=32),
            "fashion-mnist": dict(classes=10, channels=1, image_size=28),
            "brain-extraction": dict(classes=1, channels=1, image_size=None)}
ORIGINAL = "MemCNN 1.5.2"
OURS = "memcnn"

# (model, dataset) -> the package that writes its file.
SOURCES = {}
for _model in RESNETS:
    SOURCES[(_model, "cifar10")] = ORIGINAL
    SOURCES[(_model, "cifar100")] = ORIGINAL
SOURCES[("resnet32", "fashion-mnist")] = OURS
SOURCES[("revnet38", "fashion-mnist")] = OURS
for _model in TRANSFORMERS:
    SOURCES[(_model, "cifar10")] = OURS
    SOURCES[(_model, "cifar100")] = OURS
SOURCES[("vit_tiny", "fashion-mnist")] = OURS
SOURCES[("revvit_tiny", "fashion-mnist")] = OURS
SOURCES[("iunet3d", "brain-extraction")] = OURS

# memcnn-train's iunet3d recipe (train/experiments.json's "iunet3d" model_options).
IUNET3D = dict(channels=[8, 32, 128], layers=[0, 2, 2], norm="batch", method="cayley", init="haar",
               learnable_resampling=True, channel_mixing_every=1)


def package():
    """Which memcnn is imported: this repository's (it has the extension _C) or MemCNN 1.5.2."""
    try:
        from memcnn import _C  # noqa: F401
    except ImportError:
        return ORIGINAL
    return OURS


def file_name(model, dataset):
    return "{}-{}.txt".format(model, dataset)


def build_resnet(model, dataset):
    """The experiment's network, as MemCNN's experiment factory builds it from experiments.json."""
    from memcnn.experiment.factory import get_attr_from_module, load_experiment_config
    experiments = os.path.join(os.path.dirname(memcnn.__file__), "config", "experiments.json")
    config = load_experiment_config(experiments, [model, dataset])
    params = dict(config["model_params"])
    params["block"] = get_attr_from_module(params["block"])
    return get_attr_from_module(config["model"])(**params)


def build_transformer(model, dataset):
    from memcnn.models import vit
    d = DATASETS[dataset]
    return vit.create(model, d["classes"], d["channels"], d["image_size"])


class IUNetSegmentation(nn.Module):
    """memcnn-train's segmentation network (memcnn::models::IUNetSegmentation): a 3x3x3 convolution
    to the iUNet's channels, the iUNet, a 1x1x1 convolution to the class scores."""

    def __init__(self, in_channels, classes, iunet):
        super().__init__()
        width = iunet.channels[0]
        self.stem = nn.Sequential(nn.Conv3d(in_channels, width, 3, padding=1))
        self.iunet = iunet
        self.head = nn.Sequential(nn.Conv3d(width, classes, 1))


def build_iunet3d(dataset):
    from memcnn.iunet import IUNet, iunet_coupling_blocks
    o = IUNET3D
    iunet = IUNet(o["channels"], o["layers"], 3, block=iunet_coupling_blocks(o["norm"]), method=o["method"],
                  init=o["init"], learnable_resampling=o["learnable_resampling"],
                  channel_mixing_every=o["channel_mixing_every"])
    d = DATASETS[dataset]
    return IUNetSegmentation(d["channels"], d["classes"], iunet)


def build(model, dataset):
    if model in RESNETS:
        return build_resnet(model, dataset)
    if model in TRANSFORMERS:
        return build_transformer(model, dataset)
    if model == "iunet3d":
        return build_iunet3d(dataset)
    raise ValueError("no Python twin known for {!r}".format(model))


def tensor_lines(model, dataset):
    """`name [shape]` for every tensor of the network's state_dict, in its order."""
    state = build(model, dataset).state_dict()
    return ["{} [{}]".format(name, ",".join(str(s) for s in tensor.shape)) for name, tensor in state.items()]


def header(model, dataset, source):
    what = {ORIGINAL: "MemCNN 1.5.2's memcnn.models.resnet.ResNet from its experiments.json",
            OURS: "memcnn's Python package"}[source]
    return "# {} on {}: state_dict of {}, written by python/tools/dump_state_dict_keys.py".format(
        model, dataset, what)


def read_lines(path):
    """The tensor lines of a fixture (without comments)."""
    with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]


def buildable(source):
    """Whether the imported package builds a fixture of `source`: each builds its own; this package
    also MemCNN's ResNets (its memcnn.models.resnet is meant to have their names)."""
    return source == package() or package() == OURS


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="where the fixtures are (written, or compared with --check)")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    differences = 0
    for (model, dataset), source in sorted(SOURCES.items()):
        path = os.path.join(args.folder, file_name(model, dataset))
        if args.check:
            if not buildable(source):
                continue
            if not os.path.exists(path):
                print("missing: {}".format(path))
                differences += 1
            elif read_lines(path) != tensor_lines(model, dataset):
                print("differs: {} (from {}; now built by {})".format(path, source, package()))
                differences += 1
            continue
        if source != package():
            continue
        os.makedirs(args.folder, exist_ok=True)
        with open(path, "w") as f:
            f.write("\n".join([header(model, dataset, source)] + tensor_lines(model, dataset)) + "\n")
        print("wrote {}".format(path))
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
