#!/usr/bin/env python3
"""The Python half of examples/weights_from_python.cpp: a reversible block defined and trained with
memcnn's Python package, its weights handed to the same block in C++.

    python3 examples/weights_from_python.py [--example PATH] [--work DIR]

Builds memcnn.InvertibleModuleWrapper(memcnn.AdditiveCoupling(Fm=Branch(c), Gm=Branch(c))), trains it
a few SGD steps (so that the weights and BatchNorm statistics are not the initial ones), writes
torch.save(block.state_dict(), WORK/block.pt) and WORK/io.pt ({'x': an input, 'y': the block's output
in eval mode}). With --example PATH (memcnn-example-weights-from-python), runs it on them and compares
what C++ wrote (WORK/cpp.pt, opened with weights_only=True) with Python's: max |C++ - Python| /
max |Python| of the forward and of the inverse, at most 1e-5; exit status 0 when they agree.
(examples/data/ holds the two files as this script writes them, for the ctest that runs the C++ program
without Python.)"""

import argparse
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn as nn

import memcnn

TOLERANCE = 1e-5


class Branch(nn.Module):
    """Conv-BN-ReLU keeping the number of channels: F and G of the coupling (C++: BranchImpl)."""

    def __init__(self, channels):
        super(Branch, self).__init__()
        self.seq = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())

    def forward(self, x):
        return self.seq(x)


def trained_block(channels=4, steps=5, seed=0):
    """The block after a few steps of regression to a random target."""
    torch.manual_seed(seed)
    block = memcnn.InvertibleModuleWrapper(fn=memcnn.AdditiveCoupling(Fm=Branch(channels), Gm=Branch(channels)),
                                           keep_input=False)
    optimizer = torch.optim.SGD(block.parameters(), lr=0.1)
    block.train()
    for _ in range(steps):
        x = torch.randn(8, 2 * channels, 10, 10)
        target = x.flip(1)  # before the block, which frees x in training
        optimizer.zero_grad()
        (block(x) - target).pow(2).mean().backward()
        optimizer.step()
    return block.eval()


def relative_difference(cpp, python):
    return (cpp - python).abs().max().item() / max(python.abs().max().item(), 1e-30)


def write(work):
    """Writes WORK/block.pt and WORK/io.pt; returns (x, y)."""
    block = trained_block()
    torch.manual_seed(1)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        y = block(x)
    torch.save(block.state_dict(), os.path.join(work, "block.pt"))
    torch.save({"x": x, "y": y}, os.path.join(work, "io.pt"))
    return x, y


def run(example, work):
    """Writes the files, runs the C++ program and returns (forward difference, inverse difference)."""
    x, y = write(work)
    cpp_file = os.path.join(work, "cpp.pt")
    result = subprocess.run([example, os.path.join(work, "block.pt"), os.path.join(work, "io.pt"), cpp_file],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(result.stdout, end="")
    if result.returncode != 0 and not os.path.exists(cpp_file):
        raise RuntimeError("{} failed (exit status {})".format(example, result.returncode))
    cpp = torch.load(cpp_file, weights_only=True)
    return relative_difference(cpp["y"], y), relative_difference(cpp["x"], x)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--example", default=None, help="the program memcnn-example-weights-from-python")
    parser.add_argument("--work", default=None, help="folder for the files (default: a temporary one)")
    args = parser.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="memcnn-weights-example-")
    os.makedirs(work, exist_ok=True)
    if args.example is None:
        write(work)
        print("wrote {} and {}".format(os.path.join(work, "block.pt"), os.path.join(work, "io.pt")))
        return 0
    forward, inverse = run(args.example, work)
    print("Python reads C++'s outputs: forward {:.2e}, inverse {:.2e} relative difference (tolerance {:.0e})".format(
        forward, inverse, TOLERANCE))
    return 0 if forward <= TOLERANCE and inverse <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
